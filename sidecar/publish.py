"""Turns the latest snapshot into pages on disk: coalesces bursts, retries failed writes."""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from typing import TYPE_CHECKING

import structlog

from sidecar.backoff import Backoff
from sidecar.membership import Membership, changes, membership
from sidecar.render import Change, PageData, PageTemplate, TemplateError, render_files
from sidecar.write import WriteError, write_files

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.config import Settings
    from sidecar.health import HealthState
    from sidecar.metrics import Metrics
    from sidecar.watch import Snapshot

log = structlog.get_logger("sidecar.publish")

# An isolated change is written at once; in a burst, writes are at least this far apart,
# so a scale-up of 50 pods gives ~10 writes a second and no change waits more than ~100 ms.
MIN_WRITE_INTERVAL = 0.1
HISTORY_LENGTH = 20
# A log line names at most this many addresses per direction; a first list of 10,000
# would make one 150 KB line, and the counts say the rest.
LOGGED_ADDRESSES = 20


class Publisher:
    """Owns the pages: the watch and the template watcher hand it state, one thread writes."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring of collaborators
        self,
        *,
        settings: Settings,
        template: PageTemplate,
        health: HealthState,
        metrics: Metrics,
        stop_event: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the publisher; nothing is written before a snapshot arrives."""
        self._settings = settings
        self._health, self._metrics = health, metrics
        self._stop = stop_event
        self._clock = clock
        self._wake = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._template = template
        self._dirty = False
        self._not_before = 0.0
        self._backoff = Backoff()
        self._published: tuple[Membership, PageTemplate, str] | None = None
        self._history: collections.deque[Change] = collections.deque(maxlen=HISTORY_LENGTH)
        self._shown = Membership()

    def submit(self, snapshot: Snapshot) -> None:
        """Take the newest state (called from the watch thread); older pending state is dropped."""
        with self._wake:
            self._snapshot = snapshot
            self._dirty = True
            self._wake.notify()

    def set_template(self, template: PageTemplate) -> None:
        """Use a new, already validated template and re-render with it."""
        with self._wake:
            self._template = template
            self._dirty = self._snapshot is not None
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
                    self._wake.wait(delay if self._dirty else None)
                if self._stop.is_set():
                    return
                snapshot, template = self._snapshot, self._template
                self._dirty = False
            if snapshot is not None:
                self._publish(snapshot, template)

    def _publish(self, snapshot: Snapshot, template: PageTemplate) -> None:
        current = membership(snapshot.views)
        state = (current, template, snapshot.api.value)
        if state == self._published:
            return
        self._note_change(current)
        data = PageData(
            service=self._settings.service,
            namespace=self._settings.namespace,
            membership=current,
            generated_at=dt.datetime.now(dt.UTC),
            pod_name=self._settings.pod_name,
            pod_ip=self._settings.pod_ip,
            source=snapshot.api.value,
            changes=tuple(self._history),
        )
        try:
            files = render_files(data, template)
            written = write_files(self._settings.output_dir, files)
        except TemplateError as exc:
            # Keep the last good page; a new snapshot or template will try again.
            self._metrics.errors.labels("template").inc()
            log.error("render_failed", file=exc.file, line=exc.line, reason=exc.reason)
            return
        except WriteError as exc:
            self._write_failed(exc)
            return
        now = self._clock()
        self._not_before = now + MIN_WRITE_INTERVAL
        self._published = state
        self._health.write_succeeded()
        self._metrics.writes.inc()
        self._metrics.last_write.set(time.time())
        latency = now - snapshot.received_at
        self._metrics.event_to_write.observe(latency)
        for name, members in (
            ("ready", current.ready),
            ("terminating", current.terminating),
            ("not_ready", current.not_ready),
        ):
            self._metrics.endpoints.labels(name).set(len(members))
        log.info(
            "write",
            addresses=len(current.ready),
            files=written,
            latency_ms=round(latency * 1000, 2),
        )

    def _note_change(self, current: Membership) -> None:
        added, removed = changes(self._shown, current)
        if added or removed:
            self._history.appendleft(
                Change(at=dt.datetime.now(dt.UTC), added=added, removed=removed)
            )
            log.info(
                "membership_changed",
                added=added[:LOGGED_ADDRESSES],
                added_count=len(added),
                removed=removed[:LOGGED_ADDRESSES],
                removed_count=len(removed),
                ready=len(current.ready),
                terminating=len(current.terminating),
            )
        self._shown = current

    def _write_failed(self, exc: WriteError) -> None:
        delay = self._backoff.failure()
        self._not_before = self._clock() + delay
        with self._wake:
            self._dirty = True
        self._health.write_failed()
        self._metrics.errors.labels("write").inc()
        log.error(
            "write_failed",
            path=str(exc.path),
            errno=exc.cause.errno,
            reason=exc.cause.strerror,
            retry_in=round(delay, 2),
        )
