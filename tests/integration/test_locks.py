"""One set of dependencies: the tests run the hash-locked versions the image ships, and the
locks are exactly what the documented command makes from their inputs.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.markers import Marker

from support import documented

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
