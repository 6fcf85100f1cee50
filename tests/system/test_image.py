"""The sidecar image as shipped: built from the Dockerfile with buildah against a Debian base
made here, run with podman as a pod would run it, against the real control plane.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from controlplane import kubelet
from controlplane.objects import install_base_service, kustomize
from image.build import PODMAN, RUN_FLAGS, ImageBuildError, build_base, build_image, missing_tools
from support import documented
from support.http import status
from support.kubelet_volume import write_volume
from support.polling import wait_until
from support.ports import free_port
from support.sidecar_process import PAGE_FILES

if TYPE_CHECKING:
    from collections.abc import Iterator

    from controlplane.cluster import ControlPlane

pytestmark = [pytest.mark.image, pytest.mark.controlplane]


@pytest.fixture(scope="session")
def image() -> str:
    """The image, built from this checkout (layers cached by buildah between runs)."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"the image tests need {', '.join(missing)} (installed by .ci/run)")
    try:
        base = build_base()
        return build_image(base=base)
    except ImageBuildError as exc:
        pytest.fail(str(exc))


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_help_and_a_missing_setting(image: str) -> None:
    """--help exits 0 with the usage; without settings the image exits 2 with one line."""
    shown = podman("run", "--rm", *RUN_FLAGS, image, "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: podlister-sidecar")
    missing = podman("run", "--rm", *RUN_FLAGS, image)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "podlister-sidecar: PODLISTER_SERVICE is required"
    ]


def test_nothing_to_build_with_and_no_build_secrets(image: str) -> None:
    """The runtime image has the venv and python3: no pip, setuptools or compiler, and none of
    the build's secrets (CA bundle, pip configuration); it runs as 10101.
    """
    script = (
        "id -u; "
        "python3 -c 'import pip' 2>/dev/null && echo pip; "
        "/opt/venv/bin/python -c 'import setuptools' 2>/dev/null && echo setuptools; "
        "ls /opt/venv/bin | grep -x -e pip -e pip3 -e easy_install; "
        "command -v gcc cc; "
        "ls /run/secrets 2>/dev/null; true"
    )
    result = podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "sh", image, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10101"]
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert not [e for e in config.get("Env", []) if e.startswith(("PIP_CERT", "PIP_CONFIG"))]


def sidecar_env(namespace: str, pod_ip: str, health_port: int) -> dict[str, str]:
    """The sidecar's env as the do overlay renders it, fieldRefs resolved as the kubelet would."""
    deployment = next(o for o in kustomize("kustomize/overlays/do") if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["initContainers"][0]
    fields = {"metadata.namespace": namespace, "status.podIP": pod_ip, "metadata.name": "web-0"}
    env: dict[str, str] = {}
    for item in container["env"]:
        source: dict[str, Any] = item.get("valueFrom", {})
        env[item["name"]] = (
            fields[source["fieldRef"]["fieldPath"]] if source else str(item["value"])
        )
    # Host networking in the test: keep the manifest's address, on a port that is free here.
    host = env["PODLISTER_HEALTH_ADDR"].rpartition(":")[0]
    env["PODLISTER_HEALTH_ADDR"] = f"{host}:{health_port}"
    return env


@pytest.fixture
def container_name() -> Iterator[str]:
    """A container name; the container is removed (by name) after the test."""
    name = f"podlister-test-{free_port()}"
    yield name
    podman("rm", "--force", "--time", "2", name)


def test_runs_as_deployed_against_the_real_control_plane(
    image: str, control_plane: ControlPlane, tmp_path: Path, container_name: str
) -> None:
    """As UID 10101 with a read-only root filesystem, all capabilities dropped and no new
    privileges, in-cluster with a projected-style token folder and the Deployment's env: the
    container writes the three pages, answers /readyz, logs only JSON lines, and exits 0 on
    stop.
    """
    namespace = "image"
    install_base_service(control_plane, namespace)
    kubelet.run_ready_pod(control_plane.rest, namespace, "web-1", "10.244.7.1")
    tokens, pages, templates = tmp_path / "token", tmp_path / "html", tmp_path / "page"
    for folder, mode in ((tokens, 0o755), (pages, 0o777), (templates, 0o755)):
        folder.mkdir()
        folder.chmod(mode)  # the container's user is 10101, not the test's
    write_volume(
        tokens,
        "v1",
        {
            "token": control_plane.token_for(namespace, "podlister"),
            "ca.crt": control_plane.ca_file.read_text(),
            "namespace": namespace,
        },
    )
    for path in tokens.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
        elif not path.is_symlink():
            path.chmod(0o644)
    port = free_port()
    env = sidecar_env(namespace, "10.244.7.1", port)
    env["KUBERNETES_SERVICE_HOST"] = control_plane.host
    env["KUBERNETES_SERVICE_PORT"] = str(control_plane.port)
    flags = [f"--env={name}={value}" for name, value in env.items()]
    flags += [
        f"--volume={tokens}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        f"--volume={pages}:/srv/podlister/html",
        f"--volume={templates}:/etc/podlister/page:ro",
    ]
    started = podman(
        "run",
        "--detach",
        f"--name={container_name}",
        *RUN_FLAGS,
        "--user=10101:10101",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        *flags,
        image,
    )
    assert started.returncode == 0, started.stderr

    def listing_the_pod() -> dict[str, Any] | None:
        # The pod's EndpointSlice may come after the container's first list: an empty page
        # first, then the pod, is right.
        document: dict[str, Any] = json.loads((pages / "index.json").read_text())
        return document if document["addresses"] == ["10.244.7.1"] else None

    document = wait_until(
        listing_the_pod, timeout=30, what="index.json listing 10.244.7.1, by the container"
    )
    assert document is not None
    assert document["served_by"] == {"pod_name": "web-0", "pod_ip": "10.244.7.1"}
    # The pages and assets; a write in flight shows only as a hidden temp file beside them.
    wait_until(
        lambda: (
            [p.name for p in sorted(pages.iterdir()) if not p.name.startswith(".")] == PAGE_FILES
        ),
        timeout=10,
        what="the pages and assets",
    )
    wait_until(lambda: status(f"http://127.0.0.1:{port}/readyz") == 200, timeout=10)
    stopped = podman("stop", "--time", "10", container_name, timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    state = json.loads(podman("inspect", container_name).stdout)[0]["State"]
    assert state["ExitCode"] == 0
    logs = podman("logs", container_name).stdout.splitlines()
    assert logs
    assert all(line.startswith("{") and json.loads(line) for line in logs)


def test_base_image_command_names_the_base(image: str) -> None:
    """`tox -e base-image`, as docs/release.md gives it: with the base made (the image
    fixture made it), it prints the name to pass to the release's --base and exits 0.
    """
    del image  # made the base
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [str(repo / ".venv" / "bin" / "tox"), *documented.BASE_IMAGE.split()[1:]],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (
        "localhost/podlister-python:bookworm  (use it: tox -e release -- "
        "REGISTRY/podlister-sidecar --base localhost/podlister-python:bookworm)"
    ) in result.stdout
