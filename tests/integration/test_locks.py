"""One set of dependencies: the tests run the hash-locked versions the image ships, and the
locks are exactly what the documented command makes from their inputs.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

from kubestub import endpoint, endpoint_slice
from support import documented
from support.ports import free_port
from support.sidecar_process import SidecarProcess, write_kubeconfig

if TYPE_CHECKING:
    from kubestub import ApiStandIn

REPO = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)(?: ; ([^\\]+))?", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    """Each package a lock file pins for this platform (its marker holds), by name."""
    text = (REPO / "requirements" / lock).read_text(encoding="utf-8")
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version, marker in PINNED.findall(text)
        if not marker or Marker(marker.strip()).evaluate()
    }


@pytest.mark.parametrize("lock", ["runtime.lock", "test.lock", "build.lock"])
def test_the_tests_run_the_locked_versions(lock: str) -> None:
    """Every package of the lock is installed here at the version the lock pins: the tests
    ran what the image (runtime, build) ships, not the newest release on PyPI.
    """
    wrong = {}
    for name, version in pins(lock).items():
        installed = importlib.metadata.version(name)
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, wrong


@pytest.mark.timeout(300)
def test_the_locks_are_what_the_lock_command_makes(tmp_path: Path) -> None:
    """`.venv/bin/tox -e lock`, as docs/testing.md gives it, run on a copy of the inputs,
    writes back exactly the committed locks: nothing was edited by hand, and an upstream
    release changes no lock until someone bumps it.
    """
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "requirements", copy / "requirements")
    for name in ("pyproject.toml", "tox.ini", "README.md"):
        shutil.copy(REPO / name, copy / name)
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "tox"), *documented.LOCK.split()[1:]],
        cwd=copy,
        check=True,
        capture_output=True,
        timeout=280,
    )
    for lock in sorted((REPO / "requirements").glob("*.lock")):
        made = (copy / "requirements" / lock.name).read_text(encoding="utf-8")
        assert made == lock.read_text(encoding="utf-8"), f"{lock.name} differs from its inputs"


@pytest.mark.timeout(600)
def test_the_oldest_kubernetes_the_requirement_admits_works(
    tmp_path: Path, api: ApiStandIn
) -> None:
    """pyproject.toml admits only client releases the sidecar works with: with the oldest it
    admits (and the other packages as locked), a sidecar lists, writes its page and stops
    with 0, and in a pod the client is imported in part (no fallback). Before, 31.0.0 was
    admitted and failed every request.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (wanted,) = [Requirement(r) for r in project["dependencies"] if r.startswith("kubernetes")]
    lowest = min(Version(s.version) for s in wanted.specifier if s.operator == ">=")
    oldest = ".".join(str(part) for part in (*lowest.release, 0, 0)[:3])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    others = tmp_path / "others.txt"
    others.write_text(
        "\n".join(
            f"{name}=={version}"
            for name, version in {**pins("runtime.lock"), **pins("build.lock")}.items()
            if name != "kubernetes"
        )
    )
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*pip, "-r", str(others), f"kubernetes=={oldest}"], check=True, timeout=400)
    subprocess.run([*pip, "--no-build-isolation", "--no-index", str(REPO)], check=True, timeout=120)
    assert (
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import kubernetes; print(kubernetes.__version__)",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        == oldest
    )
    light = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PARTS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert light.stdout.strip() == "None"
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    out = tmp_path / "out"
    out.mkdir()
    sidecar = SidecarProcess(
        kubeconfig=write_kubeconfig(tmp_path / "kc", api.url),
        output_dir=out,
        log_path=tmp_path / "sidecar.log",
        health_addr=f"127.0.0.1:{free_port()}",
        python=str(venv / "bin" / "python"),
    ).start()
    try:
        sidecar.wait_page(["10.0.0.1"])
    finally:
        assert sidecar.stop() == 0


# In a fresh interpreter, in-cluster variables set: the light import's answer (None: done).
PARTS = (
    "from sidecar.api.client_import import import_client_lightly\n"
    "print(import_client_lightly({'KUBERNETES_SERVICE_HOST': '10.96.0.1'}))\n"
)
