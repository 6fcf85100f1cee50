"""Build, push, pin against a real registry on loopback (Debian's docker-registry)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from typing import TYPE_CHECKING

import pytest
import yaml

from image.build import PODMAN, REPO, RUN_FLAGS
from support.polling import wait_until
from support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.image

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """docker-registry serving plain http on a loopback port; stopped by pid afterwards."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("the release test needs docker-registry (installed by .ci/run)")
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "blobs")}},
                "http": {"addr": address},
            }
        )
    )
    with (tmp_path / "registry.log").open("ab") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        wait_until(lambda: answers(f"http://{address}/v2/"), timeout=20, what="the registry")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
        return int(response.status) == 200


def served_digest(address: str, repository: str, tag: str) -> str:
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(response.headers["Docker-Content-Digest"])


@pytest.mark.timeout(900)
def test_release_pins_the_digest_the_registry_serves(registry: str, tmp_path: Path) -> None:
    """The release command (tox -e release's module) builds, pushes to the registry, and
    writes into the overlay the digest that registry serves for the tag; the overlay then
    renders the sidecar with exactly that image.
    """
    overlay_copy = tmp_path / "repo"
    for folder in ("k8s", "kustomize"):
        shutil.copytree(REPO / folder, overlay_copy / folder)
    overlay = overlay_copy / "kustomize" / "overlays" / "do"
    repository = f"{registry}/podlister-sidecar"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "image.release",
            repository,
            f"--overlay={overlay}",
            "--base=localhost/podlister-python:bookworm",
            "--insecure",
            f"--sbom-dir={tmp_path / 'sbom'}",
        ],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"kubectl apply -k {overlay}" in result.stdout
    # The pin is the generated component's; the overlay itself is as committed.
    committed = REPO / "kustomize" / "overlays" / "do" / "kustomization.yaml"
    assert (overlay / "kustomization.yaml").read_bytes() == committed.read_bytes()
    assert f"pinned in {overlay / 'image' / 'kustomization.yaml'}" in result.stdout
    digest = served_digest(registry, "podlister-sidecar", "0.1.0")
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    sidecar = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert sidecar["image"] == f"{repository}@{digest}"
    # The SBOM names the locked Python packages and the base's Debian packages.
    components = json.loads((tmp_path / "sbom" / "podlister-sidecar-0.1.0.cdx.json").read_text())
    purls = {c.get("purl", "").split("?")[0] for c in components["components"]}
    assert "pkg:pypi/kubernetes@37.0.2" in purls
    python3 = subprocess.run(
        [
            *(*PODMAN, "run", "--rm", *RUN_FLAGS, "--entrypoint", "dpkg-query"),
            *("localhost/podlister-python:bookworm", "-W", "-f=${Version}", "python3"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"pkg:deb/debian/python3@{python3.replace('+', '%2B')}" in purls
    spdx = json.loads((tmp_path / "sbom" / "podlister-sidecar-0.1.0.spdx.json").read_text())
    assert any(p["name"] == "kubernetes" for p in spdx["packages"])


def run_release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "image.release", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )


def test_release_failures_are_one_line(tmp_path: Path) -> None:
    """A release that cannot build (the Dockerfile's base cannot be pulled here), cannot push
    (nothing listens) ends with exit 2 and one line saying what to do:
    no traceback.
    """
    no_base = run_release("127.0.0.1:1/podlister-sidecar")
    assert no_base.returncode == 2
    assert no_base.stderr.count("\n") == 1, no_base.stderr
    assert "tox -e base-image" in no_base.stderr
    assert "--base localhost/podlister-python:bookworm" in no_base.stderr

    no_push = run_release(
        "127.0.0.1:1/podlister-sidecar",
        f"--overlay={tmp_path}",
        "--base=localhost/podlister-python:bookworm",
    )
    assert no_push.returncode == 2
    assert no_push.stderr.count("\n") == 1, no_push.stderr
    assert "push to 127.0.0.1:1/podlister-sidecar:0.1.0 failed" in no_push.stderr
    assert "buildah login" in no_push.stderr
    assert "Traceback" not in no_base.stderr + no_push.stderr


README_REPRODUCE = ".venv/bin/tox -e reproduce -- --base localhost/podlister-python:bookworm"


@pytest.mark.timeout(900)
def test_two_builds_of_one_commit_are_one_image() -> None:
    """The README's reproduce command, run twice: no cache, every date the commit's, and the
    two builds print one image ID.
    """
    assert README_REPRODUCE in (REPO / "README.md").read_text(encoding="utf-8")
    ids = []
    for _ in range(2):
        result = subprocess.run(
            README_REPRODUCE.split(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        found = re.search(
            r"^image ([0-9a-f]{64}) \(every date (\d+)\)$", result.stdout, re.MULTILINE
        )
        assert found, result.stdout[-2000:]
        ids.append(found.group(1))
    assert ids[0] == ids[1]
