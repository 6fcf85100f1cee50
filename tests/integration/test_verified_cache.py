"""The tests' own caches (binaries, schemas): filled whole or not at all, checked before use."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from support import verified_cache

if TYPE_CHECKING:
    from pathlib import Path


def fill_two(staging: Path) -> None:
    """A fill: two files, one in a sub-folder."""
    (staging / "tool").write_bytes(b"\x7fELF" + b"x" * 1000)
    (staging / "schemas").mkdir()
    (staging / "schemas" / "a.json").write_text("{}", encoding="utf-8")


def test_filled_once_then_found(tmp_path: Path) -> None:
    """The first call fills the folder; the next finds it complete and does not fill again."""
    calls: list[Path] = []

    def fill(staging: Path) -> None:
        calls.append(staging)
        fill_two(staging)

    folder = verified_cache.filled(tmp_path / "tools-1", fill)
    assert (folder / "tool").read_bytes().startswith(b"\x7fELF")
    assert verified_cache.complete(folder)
    assert verified_cache.filled(tmp_path / "tools-1", fill) == folder
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tools-1.lock", "tools-1"]


def test_a_truncated_or_unfinished_cache_is_filled_again(tmp_path: Path) -> None:
    """A file cut short, a file added, or a folder left without its manifest (a run killed
    half-way, or an older layout) is not trusted: it is replaced by a complete fill.
    """
    folder = verified_cache.filled(tmp_path / "tools", fill_two)
    (folder / "tool").write_bytes(b"\x7fELF")  # truncated
    assert not verified_cache.complete(folder)
    verified_cache.filled(folder, fill_two)
    assert (folder / "tool").stat().st_size == 1004

    (folder / "stray.json").write_text("{}", encoding="utf-8")
    assert not verified_cache.complete(folder)
    verified_cache.filled(folder, fill_two)
    assert not (folder / "stray.json").exists()

    half = tmp_path / "half"
    half.mkdir()
    (half / "tool").write_bytes(b"\x7fE")  # what a killed copy leaves: no manifest
    assert not verified_cache.complete(half)
    verified_cache.filled(half, fill_two)
    assert verified_cache.complete(half)
    # Nothing moved aside or staged is left: only the folders and their lock files.
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".")]


def test_a_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    """A fill that raises leaves no folder and no staging folder behind; the next run fills."""

    def broken(staging: Path) -> None:
        (staging / "tool").write_bytes(b"partial")
        msg = "the build failed"
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="the build failed"):
        verified_cache.filled(tmp_path / "tools", broken)
    assert [p.name for p in tmp_path.iterdir()] == [".tools.lock"]
    assert verified_cache.complete(verified_cache.filled(tmp_path / "tools", fill_two))


def test_two_runs_at_once_fill_once(tmp_path: Path) -> None:
    """Two fillers racing for one folder (two suites on one machine): one fills, the other
    waits for the lock and takes the complete result.
    """
    calls: list[int] = []
    started = threading.Barrier(2)

    def slow_fill(staging: Path) -> None:
        calls.append(1)
        time.sleep(0.3)  # a build in progress while the other run arrives
        fill_two(staging)

    results: list[Path] = []

    def run() -> None:
        started.wait(timeout=5)
        results.append(verified_cache.filled(tmp_path / "tools", slow_fill))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [tmp_path / "tools"] * 2
    assert len(calls) == 1
    assert verified_cache.complete(tmp_path / "tools")
