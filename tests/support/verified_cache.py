"""Folders the tests fill once and keep between runs: Go-built binaries, schemas, images.

Two suites may run at once on one machine, and a run may be killed half-way. So a cache
folder is filled under a unique temporary name, gets a manifest of its files (size and
SHA-256) written last, and is renamed into place; a file lock keeps two runs from filling
the same folder at once. Before use the manifest is checked against the files: a folder
without one, or whose files differ from it (truncated, half-copied, edited), is moved aside
and filled again, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MANIFEST = ".manifest.json"
LOCK_TIMEOUT = 60 * 60  # seconds: as long as the slowest fill (a cold Go build) may take


def root() -> Path:
    """The tests' user cache: $XDG_CACHE_HOME/podlister, else ~/.cache/podlister."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "podlister"


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    """Record every file's size and digest: the last thing written into a filled folder."""
    entries = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _digest(p)}
        for p in _files(folder)
    }
    (folder / MANIFEST).write_text(json.dumps(entries, sort_keys=True), encoding="utf-8")


def complete(folder: Path) -> bool:
    """True when the folder has a manifest and holds exactly the files it lists, unchanged."""
    try:
        entries = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(entries, dict) or not entries:
        return False
    present = {str(p.relative_to(folder)): p for p in _files(folder)}
    if set(present) != set(entries):
        return False
    return all(
        present[name].stat().st_size == entry["size"] and _digest(present[name]) == entry["sha256"]
        for name, entry in entries.items()
    )


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on path (made if missing) for the block; bounded wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    msg = f"{path} still locked by another run after {timeout:.0f} s"
                    raise TimeoutError(msg) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _discard(folder: Path) -> None:
    """Move an untrusted folder aside at once (a rename), then delete it."""
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}.discarded-{os.getpid()}-{time.monotonic_ns()}")
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def filled(folder: Path, fill: Callable[[Path], None]) -> Path:
    """folder, complete: as found, or filled by fill(staging) and renamed into place."""
    if complete(folder):
        return folder
    with locked(folder.with_name(f".{folder.name}.lock")):
        if complete(folder):  # another run filled it while we waited
            return folder
        _discard(folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            fill(staging)
            write_manifest(staging)
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return folder
