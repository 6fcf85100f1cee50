"""A page set on disk: rendered, written atomically with distinct ETags, compact if it must.

A page is always written, whatever the data: a page too large to render, or one the folder
cannot hold beside its old version (a ``sizeLimit`` set for fewer pods), is written as the
packaged compact page (every address, no names, no history), so the pod stays in the Service
with a complete list.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import time
from typing import TYPE_CHECKING

import structlog

from sidecar.metrics import ErrorKind
from sidecar.page.document import JSON_FILE, PageData
from sidecar.page.fragments import Kept, member_json
from sidecar.page.render import MAX_PAGE_BYTES, TemplateError, page_assets, render_files
from sidecar.page.write import WriteError, write_atomic, write_files

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sidecar.metrics import Metrics
    from sidecar.page.render import PackagedPage, PageTemplate

log = structlog.get_logger("sidecar.publish")

# The folder is full (or at its quota): a smaller page may still fit.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# The file the live page polls with If-None-Match: each version needs its own ETag.
POLLED = JSON_FILE
# A render of 10,000 members builds and frees a few MB of strings (index.html and index.json
# are ~1 MB each), beside the list's parsed JSON. glibc then raises its mmap threshold and keeps
# the freed heap pages: in-cluster on the real control plane, RSS at 10,000 endpoints was 57.8 MiB
# without a trim, 43.8 MiB with one after each such page, against the container's 160 Mi, for
# ~4 ms more per change of ~32 (medians of 3 runs: docs/benchmarks.md). Smaller pages (1,000
# members: ~0.2 MB) are not worth it.
TRIM_FROM_BYTES = 1024 * 1024
# The packaged page's markup around one member's text (its <li>): ~140 characters.
MARKUP_PER_MEMBER = 160


# nginx's ETag for a static file is its modification time in whole seconds and its size
# ("<mtime hex>-<size hex>"). The live page polls index.json with If-None-Match, so two
# versions written within one second with the same length ("10.0.0.2" replaced by
# "10.0.0.3") would share an ETag, and the browser would be told "304 Not Modified" about a
# list that changed. So each version gets a size not yet used in its second: JSON allows
# trailing whitespace, and a few spaces before the final newline change nothing it says.
@dataclasses.dataclass
class DistinctVersions:
    """The sizes already given out in the current second (the ETag's other half)."""

    second: int = -1
    sizes: set[int] = dataclasses.field(default_factory=set)

    def seen(self, second: int, size: int) -> None:
        """Record a version that exists already (the file an earlier run left)."""
        self._in(second).add(size)

    def _in(self, second: int) -> set[int]:
        """The sizes given out in that second (a new second starts with none)."""
        if second != self.second:
            self.second, self.sizes = second, set()
        return self.sizes

    def distinct(self, data: bytes, second: int) -> bytes:
        """Data padded, if needed, to a size no other version of this second has.

        ``data`` ends with a newline (render_files writes it so); spaces go before it.
        Seconds only move forward here: after a clock step back the set starts afresh,
        which can reuse an ETag of that earlier second only if the sizes match too.
        """
        sizes = self._in(second)
        padding = 0
        while len(data) + padding in sizes:
            padding += 1
        sizes.add(len(data) + padding)
        if not padding:
            return data
        return data[:-1] + b" " * padding + data[-1:]


class PageWriter:
    """Writes page sets and the packaged page's assets into the output folder."""

    def __init__(self, folder: Path, *, packaged: PackagedPage, metrics: Metrics) -> None:
        """Note the ETag of a page an earlier run left, so that the next one differs from it."""
        self._folder, self._packaged, self._metrics = folder, packaged, metrics
        self._assets = page_assets()
        self._versions = DistinctVersions()
        self._pieces = Kept(member_json)
        try:
            left = (folder / POLLED).stat()
        except OSError:
            pass  # no earlier page, or a folder the first write will report on
        else:
            self._versions.seen(int(left.st_mtime), left.st_size)

    def write(self, data: PageData, template: PageTemplate) -> list[str]:
        """Write the page set; the names of the files that changed.

        TemplateError when a template of the user's own fails on the data (the caller picks
        another); WriteError when the folder refuses it for any reason but space.
        """
        # Every time, not once: someone may have emptied or re-created the folder.
        for name, content in self._assets.items():
            write_atomic(self._folder / name, content)
        if _too_large(data):  # before the render: its peak memory is several times the page
            self._metrics.errors.labels(ErrorKind.RENDER_COMPACT).inc()
            log.error("render_compact", reason="page too large", weight=data.membership.text)
            return self._write_compact(data)
        try:
            files = render_files(data, template, self._pieces)
        except TemplateError as exc:
            if template is not self._packaged:
                raise
            self._metrics.errors.labels(ErrorKind.RENDER_COMPACT).inc()
            log.error("render_compact", **exc.fields(), addresses=len(data.membership.ready))
            return self._write_compact(data)
        try:
            written = self._write_pages(files)
        except WriteError as exc:
            if exc.cause.errno not in _NO_SPACE:
                raise
            self._metrics.errors.labels(ErrorKind.WRITE_COMPACT).inc()
            log.warning(
                "write_compact",
                reason="the full page does not fit in the output folder",
                path=str(exc.path),
                addresses=len(data.membership.ready),
            )
            return self._write_compact(data)
        if sum(map(len, files.values())) >= TRIM_FROM_BYTES:
            del files  # the rendered bytes are garbage now
            _trim_heap()
        return written

    def _write_compact(self, data: PageData) -> list[str]:
        return self._write_pages(render_files(data.compacted(), self._packaged, self._pieces))

    def _write_pages(self, files: dict[str, bytes]) -> list[str]:
        # One modification time for all three, chosen here so the second that keeps
        # index.json's ETag distinct is the second nginx will put in it.
        now_ns = time.time_ns()
        files[POLLED] = self._versions.distinct(files[POLLED], now_ns // 1_000_000_000)
        return write_files(self._folder, files, mtime_ns=now_ns)


def _too_large(data: PageData) -> bool:
    """Whether the full page would pass MAX_PAGE_BYTES, from its members' text and count.

    An estimate made before anything is built: 20,000 members with names as long as the API
    allows took the sidecar to 171 MiB against its 160 Mi when their page was rendered.
    """
    lists = data.membership
    members = len(lists.ready) + len(lists.terminating) + len(lists.not_ready)
    return lists.text + MARKUP_PER_MEMBER * members > MAX_PAGE_BYTES


def _trim_heap() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim()


@functools.cache
def _malloc_trim() -> Callable[[], object] | None:
    """The C library's ``malloc_trim(0)`` (glibc), or None where it has none (musl, macOS)."""
    # Here, not at the top: only large pages need ctypes, and it would add to every start.
    import ctypes  # noqa: PLC0415

    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        log.info("heap_trim_unavailable", reason="the C library has no malloc_trim")
        return None
    function.argtypes = (ctypes.c_size_t,)
    function.restype = ctypes.c_int
    return functools.partial(function, 0)
