"""The heap trim after large pages (sidecar/heap.py): glibc's malloc_trim found and called,
and a C library without one leaves the sidecar as it was, said once in the log.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import structlog

from sidecar import heap
from sidecar.heap import HeapTrimmer

if TYPE_CHECKING:
    import pytest


def test_glibc_malloc_trim_is_found_and_runs() -> None:
    """On this machine's glibc (the image's too) malloc_trim is found through ctypes, and
    calling it answers 1 (memory released) or 0 (none to release), as glibc documents.
    """
    trim = heap.malloc_trim()
    assert trim is not None
    assert trim() in {0, 1}


def test_without_malloc_trim_nothing_is_trimmed_and_the_log_says_so_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A C library without malloc_trim (musl): the first large page looks it up, logs
    heap_trim_unavailable once, and no later page looks again or fails.
    """
    lookups: list[object] = []

    class NoTrim:
        def __init__(self, name: object) -> None:
            lookups.append(name)

    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    trimmer = HeapTrimmer(from_bytes=10)
    with structlog.testing.capture_logs() as logs:
        trimmer.after_write(9)
        assert lookups == []
        trimmer.after_write(10)
        trimmer.after_write(10_000)
    assert lookups == [None]
    assert [entry["event"] for entry in logs] == ["heap_trim_unavailable"]
