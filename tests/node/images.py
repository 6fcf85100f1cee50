"""The node's three images, made here (nothing can be pulled): pause, nginx and the sidecar.

- pause: the static ``pause`` binary of ``tests/controlplane`` alone, in an image from scratch.
- nginx: Debian's ``nginx-light`` on a Debian base made with mmdebstrap, standing in for
  ``nginxinc/nginx-unprivileged`` (the pod's command, user and mounts come from our
  manifests, not from the image).
- the sidecar: our Dockerfile, as the image tests build it.

Each is pushed to the node's own registry, inside its network namespace; the kubelet pulls
from there (the manifests say ``imagePullPolicy: Always``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from image.build import PODMAN, ImageBuildError, build_base, build_image, debian_image

if TYPE_CHECKING:
    from node.namespace import Namespaces

NGINX_IMAGE = "localhost/podlister-nginx:bookworm"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(command: list[str], *, timeout: float) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise ImageBuildError(f"{' '.join(command[:4])} ... failed ({result.returncode}):\n{tail}")
    return result.stdout


def _image_id(name: str) -> str | None:
    result = subprocess.run(
        [*PODMAN, "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def pause_image(binaries: Path) -> str:
    """The pause image's ID: the binary at /pause, its entrypoint."""
    container = _run(["buildah", "from", "scratch"], timeout=60).strip()
    try:
        _run(["buildah", "copy", container, str(binaries / "pause"), "/pause"], timeout=60)
        _run(["buildah", "config", "--entrypoint", '["/pause"]', container], timeout=60)
        with tempfile.TemporaryDirectory(prefix="podlister-pause-") as folder:
            iid = Path(folder) / "iid"
            # Dated 0: the same binary gives the same image ID, so runs do not pile up images.
            command = ["buildah", "commit", "--quiet", "--timestamp", "0", "--iidfile", str(iid)]
            _run([*command, container], timeout=120)
            return iid.read_text(encoding="utf-8").strip().removeprefix("sha256:")
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, timeout=60, check=False)


def nginx_image() -> str:
    """Debian's nginx-light image's ID, made once per machine (~30 s to 4 min)."""
    debian_image(NGINX_IMAGE, ("nginx-light",), (f"ENV {PATH_ENV}",))
    found = _image_id(NGINX_IMAGE)
    if found is None:
        raise ImageBuildError(f"{NGINX_IMAGE} is not in local storage after its import")
    return found


def sidecar_image() -> str:
    """The sidecar image's ID, built from this checkout on the Debian Python base."""
    return build_image(base=build_base())


def push(namespaces: Namespaces, image_id: str, remote: str) -> str:
    """Push a local image to the registry inside the namespaces; remote@digest."""
    with tempfile.TemporaryDirectory(prefix="podlister-push-") as folder:
        digest_file = Path(folder) / "digest"
        command = namespaces.command(
            "buildah",
            "push",
            "--quiet",
            "--tls-verify=false",
            "--digestfile",
            str(digest_file),
            image_id,
            f"docker://{remote}",
            mount=False,
        )
        _run(command, timeout=600)
        return f"{remote.rsplit(':', 1)[0]}@{digest_file.read_text(encoding='utf-8').strip()}"
