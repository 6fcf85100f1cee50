"""Build the sidecar image with Debian's buildah, and a Python base for it with mmdebstrap.

``tox -e base-image`` (``python -m image.build`` from tests/) makes the base and prints its name.

No container registry is reachable from our machines, so the base is made here from Debian's
packages (python3, python3-venv) and imported into local storage; the Dockerfile builds
against it with ``--build-arg PYTHON_IMAGE`` and never pulls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from support import verified_cache as cache

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/podlister-python:bookworm"
IMAGE = "localhost/podlister-sidecar:test"
BASE_PACKAGES = ("python3", "python3-venv")
MIRROR = "deb http://deb.debian.org/debian bookworm main"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# podman here: runc with cgroupfs (no systemd in the machine) and explicit limits, as the
# runtime refuses to raise the defaults it inherits.
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
RUN_FLAGS = (
    "--network",
    "host",
    "--pull=never",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
)
TOOLS = ("buildah", "podman", "mmdebstrap")


class ImageBuildError(Exception):
    """A tool is missing or a step failed; the message says which and why."""


def _run(command: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise ImageBuildError(f"{' '.join(command[:3])} ... failed ({result.returncode}):\n{tail}")
    return result


def missing_tools() -> list[str]:
    """The tools this module needs that are not installed."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _has_image(name: str) -> bool:
    result = subprocess.run(
        [*PODMAN, "image", "exists", name], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


def build_base() -> str:
    """The Debian base (python3, python3-venv) in local storage, made once per machine."""
    return debian_image(BASE_IMAGE, BASE_PACKAGES)


def debian_image(name: str, packages: tuple[str, ...], changes: tuple[str, ...] = ()) -> str:
    """An image of Debian's essential set plus packages, by mmdebstrap, made once per
    machine: name, once it is in local storage.

    Under a lock, so that two suites at once make it once; mmdebstrap writes a tarball of
    this run's own, and the image exists in podman's storage only once imported whole.
    changes: Dockerfile instructions for the import (ENV PATH=...).
    """
    if _has_image(name):
        return name
    with cache.locked(cache.root() / f".{name.replace('/', '_').replace(':', '_')}.lock"):
        if _has_image(name):
            return name
        with tempfile.TemporaryDirectory(prefix="podlister-base-") as folder:
            tarball = Path(folder) / "image.tar"
            _run(
                [
                    "mmdebstrap",
                    "--variant=essential",
                    f"--include={','.join(packages)}",
                    "--mode=root",
                    "--quiet",
                    "bookworm",
                    str(tarball),
                    MIRROR,
                ],
                timeout=900,
            )
            change_flags = [flag for change in changes for flag in ("--change", change)]
            _run([*PODMAN, "import", "--quiet", *change_flags, str(tarball), name], timeout=300)
    return name


def build_image(
    tag: str = IMAGE,
    *,
    base: str | None = BASE_IMAGE,
    timestamp: int | None = None,
    cache: bool = True,
) -> str:
    """Build the Dockerfile, passing the host's CA bundle and pip configuration as secrets;
    return the image's ID.

    With base (an image in local storage) nothing is pulled; without, the Dockerfile's
    pinned default is pulled if missing. Callers use the ID, not the tag: another run on
    the machine may move the tag to its own build at any time.

    timestamp (seconds since the epoch, e.g. the commit's time): a reproducible build, every
    date in the image set to it (buildah's --timestamp, and SOURCE_DATE_EPOCH for the
    bytecode pip and compileall write). cache=False: every step runs again.
    """
    with tempfile.TemporaryDirectory(prefix="podlister-build-") as folder:
        iidfile = Path(folder) / "iid"
        _build(tag, base=base, iidfile=iidfile, timestamp=timestamp, cache=cache)
        return iidfile.read_text(encoding="utf-8").strip().removeprefix("sha256:")


def _build(
    tag: str, *, base: str | None, iidfile: Path, timestamp: int | None, cache: bool
) -> None:
    command = ["buildah", "bud", "--isolation", "chroot", "--network", "host"]
    command += ["--layers"] if cache else ["--no-cache"]
    command += ["--iidfile", str(iidfile)]
    if timestamp is not None:
        command += ["--timestamp", str(timestamp)]
        command += ["--build-arg", f"SOURCE_DATE_EPOCH={timestamp}"]
    if base is not None:
        command += ["--pull=never", "--build-arg", f"PYTHON_IMAGE={base}"]
    command += ["-t", tag]
    if CA_BUNDLE.exists():
        command += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    pip_config = os.environ.get("PIP_CONFIG_FILE") or "/etc/pip.conf"
    if Path(pip_config).is_file():
        command += ["--secret", f"id=pipconf,src={pip_config}"]
    _run([*command, str(REPO)], timeout=1200)


def main() -> int:
    """Make the Debian base (``tox -e base-image``) and print its name; 2 with the reason."""
    missing = missing_tools()
    if missing:
        print(f"base-image: apt-get install {' '.join(missing)}", file=sys.stderr)
        return 2
    try:
        name = build_base()
    except ImageBuildError as exc:
        print(f"base-image: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{name}  (use it: tox -e release -- REGISTRY/podlister-sidecar --base {name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
