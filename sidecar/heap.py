"""Freed heap memory handed back to the OS after a large page: glibc keeps its high-water mark."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger("sidecar.heap")

# A render of 10,000 members builds and frees a few MB of strings (index.html and index.json
# are ~1 MB each). Once glibc has freed a block that large it raises its mmap threshold to match,
# so the next renders take their blocks from the heap, whose freed pages it keeps: RSS after
# 40 changes at 10,000 members was 60-67 MiB, 46-49 with a trim after each write, for
# 1.3-2.7 ms more per change of ~15-25 ms (the next render touches fresh pages; measured,
# README). Smaller pages (1,000 members: ~0.2 MB) are not worth that.
TRIM_FROM_BYTES = 1024 * 1024


class HeapTrimmer:
    """Trims the C heap after a write of at least from_bytes; nothing where there is no trim."""

    def __init__(
        self, from_bytes: int = TRIM_FROM_BYTES, trim: Callable[[], object] | None = None
    ) -> None:
        """``trim`` (default: glibc's, looked up on the first large page) releases the heap."""
        self._from_bytes = from_bytes
        self._trim = trim
        self._looked_up = trim is not None

    def after_write(self, size: int) -> None:
        """Called with the bytes of the pages just written, once they are freed."""
        if size < self._from_bytes:
            return
        if not self._looked_up:
            self._looked_up = True
            self._trim = malloc_trim()
            if self._trim is None:
                log.info("heap_trim_unavailable", reason="the C library has no malloc_trim")
        if self._trim is not None:
            self._trim()


def malloc_trim() -> Callable[[], object] | None:
    """The C library's ``malloc_trim(0)`` (glibc), or None where it has none (musl, macOS)."""
    # Here, not at the top: only large pages need ctypes, and it would add to every start.
    import ctypes  # noqa: PLC0415

    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_size_t,)
    function.restype = ctypes.c_int
    return functools.partial(function, 0)
