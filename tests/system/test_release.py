"""Build, push, pin against a real registry on loopback (Debian's docker-registry)."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.request
from typing import TYPE_CHECKING

import pytest
import yaml

from image.build import PODMAN, REPO, RUN_FLAGS
from image.cosign import build as build_cosign
from support import documented
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


@pytest.fixture(scope="module")
def cosign() -> Path:
    """Cosign v3.1.3, built from tests/image/cosign's Go module (a verified cache)."""
    return build_cosign()


@pytest.fixture
def key_password() -> str:
    """A fresh password for the test's key pair (it signs nothing but the test's image)."""
    return secrets.token_urlsafe(16)


@pytest.fixture
def key_pair(cosign: Path, tmp_path: Path, key_password: str) -> Path:
    """A cosign key pair (cosign.key, cosign.pub) made by the documented command, exactly as
    written, in a checkout of tox.ini and tests/ of its own (it writes where it runs).
    """
    del cosign  # built: the command below finds it in the verified cache
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy2(REPO / "tox.ini", checkout / "tox.ini")
    for folder in ("image", "support"):
        shutil.copytree(
            REPO / "tests" / folder,
            checkout / "tests" / folder,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "tox"), *documented.KEY_PAIR.split()[1:]],
        cwd=checkout,
        env={**os.environ, "COSIGN_PASSWORD": key_password},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (checkout / "cosign.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    return checkout


def cosign_runs(cosign: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Command (a documented line starting with ``cosign``) with our cosign; not checked."""
    words = command.split()
    assert words[0] == "cosign"
    return subprocess.run(
        [str(cosign), *words[1:]], capture_output=True, text=True, timeout=120, check=False
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


@pytest.mark.timeout(1800)
def test_release_pins_signs_and_attests_the_digest_the_registry_serves(
    registry: str, tmp_path: Path, cosign: Path, key_pair: Path, key_password: str
) -> None:
    """The documented release command (its module, as tox -e release runs it, with this
    machine's registry and base) builds, pushes to the registry, and writes into the overlay
    the digest that registry serves for the tag; the overlay then renders the sidecar with
    exactly that image. Its SBOMs name the locked packages; the documented cosign checks pass
    for the released digest and fail once the tag is moved to an unsigned image.
    """
    overlay_copy = tmp_path / "repo"
    for folder in ("k8s", "kustomize"):
        shutil.copytree(REPO / folder, overlay_copy / folder)
    overlay = overlay_copy / "kustomize" / "overlays" / "do"
    repository = f"{registry}/podlister-sidecar"
    release, *given = documented.RELEASE.split(" -- ")[1].split()
    assert (release, given) == ("REGISTRY/podlister-sidecar", ["--key", "cosign.key"])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "image.release",
            release.replace("REGISTRY", registry),
            "--key",
            str(key_pair / given[1]),
            # What this machine cannot give: a registry with TLS, a base to pull.
            f"--overlay={overlay}",
            "--base=localhost/podlister-python:bookworm",
            "--insecure",
            f"--release-dir={tmp_path / 'sbom'}",
        ],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO / "tests"),
            "COSIGN_PASSWORD": key_password,
        },
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

    # The documented checks, as a cluster admin runs them, against the released digest.
    published = tmp_path / "sbom" / "podlister-sidecar-0.1.0.pub"
    assert published.read_bytes() == (key_pair / "cosign.pub").read_bytes()
    for line in (documented.VERIFY, documented.VERIFY_ATTESTATION):
        command = (
            line.replace("build/release/", f"{tmp_path / 'sbom'}/")
            .replace("REGISTRY", registry)
            .replace("DIGEST", digest)
        )
        checked = cosign_runs(cosign, command)
        assert checked.returncode == 0, checked.stderr[-2000:]
    attested = json.loads(cosign_runs(cosign, command).stdout.splitlines()[0])
    assert "CycloneDX" in base64.b64decode(attested["payload"]).decode()

    # The tag moved to another (unsigned) image: checking the tag fails, signature and
    # attestation alike; the released digest still passes.
    moved = subprocess.run(
        [
            *("buildah", "push", "--tls-verify=false"),
            *("localhost/podlister-python:bookworm", f"docker://{repository}:0.1.0"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert served_digest(registry, "podlister-sidecar", "0.1.0") != digest
    pub = str(published)
    for check in ("verify", "verify-attestation"):
        tampered = cosign_runs(
            cosign, f"cosign {check} --key {pub} --insecure-ignore-tlog=true {repository}:0.1.0"
        )
        assert tampered.returncode != 0
        assert "no signatures found" in tampered.stderr or "no matching" in tampered.stderr
    still = cosign_runs(
        cosign, f"cosign verify --key {pub} --insecure-ignore-tlog=true {repository}@{digest}"
    )
    assert still.returncode == 0, still.stderr[-2000:]


def run_release(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    environment.pop("PODLISTER_COSIGN_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "image.release", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
    )


def test_release_failures_are_one_line(tmp_path: Path) -> None:
    """A release without a signing key (none given, or a path that is no file), one that
    cannot build (the Dockerfile's base cannot be pulled here), one that cannot push (nothing
    listens) each end with exit 2 and one line saying what to do, before any build for the
    key: no traceback.
    """
    no_key = run_release("127.0.0.1:1/podlister-sidecar")
    assert no_key.returncode == 2
    assert no_key.stderr.count("\n") == 1, no_key.stderr
    assert "tox -e cosign -- generate-key-pair" in no_key.stderr
    assert "--key cosign.key" in no_key.stderr
    missing = run_release("127.0.0.1:1/podlister-sidecar", f"--key={tmp_path / 'cosign.key'}")
    assert missing.returncode == 2
    assert missing.stderr == (
        f"release: the signing key {tmp_path / 'cosign.key'} is not a file: pass --key with "
        "the path of cosign.key\n"
    )
    key = tmp_path / "cosign.key"
    key.write_text("only opened by cosign, after the build and push\n")
    no_base = run_release("127.0.0.1:1/podlister-sidecar", f"--key={key}")
    assert no_base.returncode == 2
    assert no_base.stderr.count("\n") == 1, no_base.stderr
    assert "tox -e base-image" in no_base.stderr
    assert "--base localhost/podlister-python:bookworm" in no_base.stderr

    no_push = run_release(
        "127.0.0.1:1/podlister-sidecar",
        f"--key={key}",
        f"--overlay={tmp_path}",
        "--base=localhost/podlister-python:bookworm",
    )
    assert no_push.returncode == 2
    assert no_push.stderr.count("\n") == 1, no_push.stderr
    assert "push to 127.0.0.1:1/podlister-sidecar:0.1.0 failed" in no_push.stderr
    assert "buildah login" in no_push.stderr
    assert "Traceback" not in no_key.stderr + missing.stderr + no_base.stderr + no_push.stderr


@pytest.mark.timeout(900)
def test_two_builds_of_one_commit_are_one_image() -> None:
    """The documented reproduce command, run twice: no cache, every date the commit's, and
    the two builds print one image ID.
    """
    ids = []
    for _ in range(2):
        result = subprocess.run(
            documented.REPRODUCE.split(),
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
