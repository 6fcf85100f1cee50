"""Turns the latest snapshot into pages on disk: coalesces bursts, retries failed writes."""

from __future__ import annotations

import datetime as dt
import errno
import threading
import time
from typing import TYPE_CHECKING

import structlog

from sidecar.backoff import Backoff
from sidecar.document import JSON_FILE, PageData
from sidecar.etag import DistinctVersions
from sidecar.fragments import Fragments
from sidecar.heap import HeapTrimmer
from sidecar.history import History
from sidecar.kinds import ErrorKind
from sidecar.membership import Membership, membership
from sidecar.render import page_assets
from sidecar.sandbox import TemplateError, packaged_template
from sidecar.template_choice import TemplateChoice
from sidecar.write import WriteError, write_atomic, write_files

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sidecar.config import Settings
    from sidecar.health import HealthState
    from sidecar.history import Change
    from sidecar.membership import Snapshot
    from sidecar.metrics import Metrics
    from sidecar.previous import PreviousPage
    from sidecar.sandbox import Template

log = structlog.get_logger("sidecar.publish")

# An isolated change is written at once; in a burst, writes are at least this far apart,
# so a scale-up of 50 pods gives ~10 writes a second and no change waits more than ~100 ms.
MIN_WRITE_INTERVAL = 0.1
# Failed writes (full or read-only folder) are retried this often at most: the page must
# come back within seconds of space returning, and a retry costs one small write attempt.
WRITE_BACKOFF_CAP = 4.0
WORKER = "publish"
# The folder is full (or at its quota): a smaller page may still fit.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# The file the live page polls with If-None-Match: each version needs its own ETag.
POLLED = JSON_FILE


class Publisher:
    """Owns the pages: the watch and the template watcher hand it state, one thread writes."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring of collaborators
        self,
        *,
        settings: Settings,
        template: Template,
        health: HealthState,
        metrics: Metrics,
        stop_event: threading.Event,
        previous: PreviousPage | None = None,
        fallback: Template | None = None,
        clock: Callable[[], float] = time.monotonic,
        heap: HeapTrimmer | None = None,
    ) -> None:
        """Wire the publisher; nothing is written before there is news.

        ``fallback`` (default: the packaged page) renders when the template fails; ``heap``
        (default: glibc's trim after pages of TRIM_FROM_BYTES) runs after each write.
        """
        self._settings = settings
        self._health, self._metrics = health, metrics
        self._stop = stop_event
        self._clock = clock
        self._wake = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._templates = TemplateChoice(template, fallback or packaged_template(), metrics)
        self._stale_since: dt.datetime | None = None
        self._dirty = False
        self._not_before = 0.0
        self._backoff = Backoff(cap=WRITE_BACKOFF_CAP)
        self._published: tuple[object, ...] | None = None
        # An earlier run's page: served until the first list, and where the history goes on.
        self._previous = previous
        self._history = History(previous.membership, previous.changes) if previous else History()
        self._writer = PageWriter(settings.output_dir, self._templates, metrics, heap)

    def submit(self, snapshot: Snapshot) -> None:
        """Take the newest state (called from the watch thread); older pending state is dropped."""
        with self._wake:
            self._snapshot = snapshot
            self._dirty = True
            self._wake.notify()

    def set_template(self, template: Template) -> None:
        """Use a new, already validated template and re-render with it."""
        self._templates.set(template)
        with self._wake:
            self._dirty = self._has_page()
            self._wake.notify()

    def set_stale(self, since: dt.datetime | None) -> None:
        """The API is unreachable since then (None: reachable again); the page says so."""
        with self._wake:
            if since == self._stale_since:
                return
            self._stale_since = since
            self._dirty = self._has_page()
            self._wake.notify()

    def stop(self) -> None:
        """Wake the loop so it sees the stop event."""
        with self._wake:
            self._wake.notify()

    def run(self) -> None:
        """Write pages whenever there is news, at most every MIN_WRITE_INTERVAL, until stopped."""
        while True:
            with self._wake:
                while not self._stop.is_set():
                    delay = self._not_before - self._clock()
                    if self._dirty and delay <= 0:
                        break
                    if self._dirty:
                        self._health.beat(WORKER)
                        self._wake.wait(delay)
                    else:
                        # Nothing to do for as long as nothing happens: not a stuck worker.
                        self._health.waiting(WORKER)
                        self._wake.wait()
                if self._stop.is_set():
                    return
                self._health.beat(WORKER)
                snapshot, template, stale = (
                    self._snapshot,
                    self._templates.current,
                    self._stale_since,
                )
                self._dirty = False
            self._publish(snapshot, template, stale)

    def _has_page(self) -> bool:
        return self._snapshot is not None or self._previous is not None

    def _publish(
        self, snapshot: Snapshot | None, template: Template, stale: dt.datetime | None
    ) -> None:
        if snapshot is not None:
            current, source = membership(snapshot.views), snapshot.source
            received_at = snapshot.received_at
        elif self._previous is not None:
            current, source = self._previous.membership, self._previous.source
            received_at = self._clock()
        else:
            return
        state = (current, template, source, stale)
        if state == self._published:
            return
        if snapshot is not None:
            self._note_change(current)
        data = PageData(
            service=self._settings.service,
            namespace=self._settings.namespace,
            membership=current,
            generated_at=dt.datetime.now(dt.UTC),
            pod_name=self._settings.pod_name,
            pod_ip=self._settings.pod_ip,
            source=source,
            changes=self._history.entries,
            stale_since=stale,
        )
        try:
            written = self._writer.write(data, template)
        except TemplateError as exc:  # only if even the compact packaged page fails: a bug
            log.error("render_failed", **exc.fields())
            return
        except WriteError as exc:
            self._write_failed(exc)
            return
        self._written(current, state, received_at, written)

    def _written(
        self, current: Membership, state: tuple[object, ...], received_at: float, written: list[str]
    ) -> None:
        now = self._clock()
        self._not_before = now + MIN_WRITE_INTERVAL
        self._published = state
        self._backoff.reset()
        self._health.write_succeeded()
        _record_write(self._metrics, current, now - received_at, written)

    def _note_change(self, current: Membership) -> None:
        change = self._history.note(current, dt.datetime.now(dt.UTC))
        if change is not None:
            _log_change(change, current)

    def _write_failed(self, exc: WriteError) -> None:
        delay = self._backoff.failure()
        self._not_before = self._clock() + delay
        with self._wake:
            self._dirty = True
        self._health.write_failed()
        _record_failed_write(self._metrics, exc, delay)


def _log_change(change: Change, current: Membership) -> None:
    """The ready set changed: one log line with who came and went."""
    log.info(
        "membership_changed",
        added=change.added,
        added_count=change.added_count,
        removed=change.removed,
        removed_count=change.removed_count,
        ready=len(current.ready),
        terminating=len(current.terminating),
    )


def _record_failed_write(metrics: Metrics, exc: WriteError, retry_in: float) -> None:
    """A page set could not be written: counted, and its log line."""
    metrics.errors.labels(ErrorKind.WRITE).inc()
    log.error(
        "write_failed",
        path=str(exc.path),
        errno=exc.cause.errno,
        reason=exc.cause.strerror,
        retry_in=round(retry_in, 2),
    )


def _record_write(
    metrics: Metrics, current: Membership, latency: float, written: list[str]
) -> None:
    """A page set is on disk: its metrics and its log line."""
    metrics.writes.inc()
    metrics.last_write.set(time.time())
    metrics.event_to_write.observe(latency)
    for name, members in (
        ("ready", current.ready),
        ("terminating", current.terminating),
        ("not_ready", current.not_ready),
    ):
        metrics.endpoints.labels(name).set(len(members))
    log.info(
        "write", addresses=len(current.ready), files=written, latency_ms=round(latency * 1000, 2)
    )


class PageWriter:
    """Writes pages and assets: atomic, with distinct ETags, compact when full ones do not fit."""

    def __init__(
        self,
        folder: Path,
        templates: TemplateChoice,
        metrics: Metrics,
        heap: HeapTrimmer | None = None,
    ) -> None:
        """Note the ETag of a page an earlier run left, so the next one differs from it."""
        self._folder, self._templates, self._metrics = folder, templates, metrics
        self._heap = heap or HeapTrimmer()
        self._written_bytes = 0
        # Checked with every page set (an unchanged asset is not rewritten).
        self._assets = page_assets()
        # Each asset's file as last written or compared: (inode, size, mtime).
        self._asset_files: dict[str, tuple[int, int, int]] = {}
        self._versions = DistinctVersions()
        # Each member's row and JSON object from the last render: a change re-renders one.
        self._fragments = Fragments()
        try:
            left = (folder / POLLED).stat()
        except OSError:
            pass  # no earlier page, or a folder the first write will report on
        else:
            self._versions.seen(int(left.st_mtime), left.st_size)

    def write(self, data: PageData, template: Template) -> list[str]:
        """Write the pages; when they do not fit, the compact pages (every address still).

        A folder too small for the full page (a sizeLimit set for fewer pods) would
        otherwise fail every write forever and keep the pod out of the Service.
        """
        self._write_assets()
        try:
            written = self._write_pages(self._templates.render(data, template, self._fragments))
        except WriteError as exc:
            if exc.cause.errno not in _NO_SPACE:
                raise
            written = self._write_compact(data, exc)
        # The rendered bytes are garbage by now.
        self._heap.after_write(self._written_bytes)
        return written

    def _write_compact(self, data: PageData, full_failed: WriteError) -> list[str]:
        compact = data.compacted()
        written = self._write_pages(
            self._templates.render(compact, self._templates.current, self._fragments)
        )
        self._metrics.errors.labels(ErrorKind.WRITE_COMPACT).inc()
        log.warning(
            "write_compact",
            reason="the full page does not fit in the output folder",
            path=str(full_failed.path),
            addresses=len(compact.membership.ready),
        )
        return written

    def _write_assets(self) -> None:
        """Every time, not once: someone may have emptied or re-created the folder.

        An asset that is still the file last written or compared here (same inode, size and
        modification time) is not read again: comparing the two files' 20 KB was ~0.1 ms of
        every change, before the pages. Any other file is compared, and replaced if it
        differs.
        """
        for name, data in self._assets.items():
            path = self._folder / name
            if self._asset_files.get(name) == _file_identity(path):
                continue
            write_atomic(path, data)
            identity = _file_identity(path)
            if identity:
                self._asset_files[name] = identity

    def _write_pages(self, files: dict[str, bytes]) -> list[str]:
        # One modification time for all three, chosen here so the second that keeps
        # index.json's ETag distinct is the second nginx will put in it.
        now_ns = time.time_ns()
        files[POLLED] = self._versions.distinct(files[POLLED], now_ns // 1_000_000_000)
        written = write_files(self._folder, files, mtime_ns=now_ns)
        self._written_bytes = sum(map(len, files.values()))
        return written


def _file_identity(path: Path) -> tuple[int, int, int] | tuple[()]:
    """(inode, size, mtime in ns) of the file at path; () when there is none."""
    try:
        info = path.lstat()
    except OSError:
        return ()
    return info.st_ino, info.st_size, info.st_mtime_ns
