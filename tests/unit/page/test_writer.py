"""The page writer's heap trim after large pages: glibc's malloc_trim found and called, and
a C library without one leaves the sidecar as it was, said once in the log.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import pytest
import structlog

from sidecar.page import writer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def forget_the_lookup() -> Iterator[None]:
    """Each test looks the C library's malloc_trim up afresh (it is looked up once a run)."""
    writer._malloc_trim.cache_clear()
    yield
    writer._malloc_trim.cache_clear()


def test_glibc_malloc_trim_is_found_and_runs() -> None:
    """On this machine's glibc (the image's too) malloc_trim is found through ctypes, and
    calling it answers 1 (memory released) or 0 (none to release), as glibc documents.
    """
    trim = writer._malloc_trim()
    assert trim is not None
    assert trim() in {0, 1}


def test_without_malloc_trim_nothing_is_trimmed_and_the_log_says_so_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A C library without malloc_trim (musl): the first trim looks it up, logs
    heap_trim_unavailable once, and no later one looks again or fails.
    """
    lookups: list[object] = []

    class NoTrim:
        def __init__(self, name: object) -> None:
            lookups.append(name)

    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    with structlog.testing.capture_logs() as logs:
        writer._trim_heap()
        writer._trim_heap()
    assert lookups == [None]
    assert [entry["event"] for entry in logs] == ["heap_trim_unavailable"]
