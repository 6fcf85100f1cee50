"""Turns the newest state into pages on disk, in one thread: coalesced, retried, never lost.

The watch hands it snapshots and whether the API is reachable, the template watcher new
templates; it writes when there is news, at most every MIN_WRITE_INTERVAL in a burst.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import TYPE_CHECKING

import structlog

from sidecar.backoff import Backoff
from sidecar.metrics import ErrorKind
from sidecar.page.document import PageData
from sidecar.page.history import History
from sidecar.page.latency import TriggerTimes
from sidecar.page.membership import Membership, membership
from sidecar.page.render import TemplateError
from sidecar.page.write import WriteError
from sidecar.page.writer import PageWriter

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.config import Settings
    from sidecar.health.state import HealthState
    from sidecar.metrics import Metrics
    from sidecar.page.membership import SliceView, Snapshot
    from sidecar.page.previous import PreviousPage
    from sidecar.page.render import PackagedPage, PageTemplate

log = structlog.get_logger("sidecar.publish")

# An isolated change is written at once; in a burst, writes are at least this far apart,
# so a scale-up of 50 pods gives ~10 writes a second and no change waits more than ~100 ms.
MIN_WRITE_INTERVAL = 0.1
# Failed writes (full or read-only folder) are retried this often at most: the page must
# come back within seconds of space returning, and a retry costs one small write attempt.
WRITE_BACKOFF_CAP = 4.0
WORKER = "publish"


class Publisher:
    """Owns the pages and the template they render with; ``run()`` in its own thread."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring of collaborators
        self,
        *,
        settings: Settings,
        packaged: PackagedPage,
        health: HealthState,
        metrics: Metrics,
        stop_event: threading.Event,
        previous: PreviousPage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing written before there is news; ``previous``: an earlier run's page."""
        self._settings = settings
        self._health, self._metrics = health, metrics
        self._stop, self._clock = stop_event, clock
        self._wake = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._stale_since: dt.datetime | None = None
        self._handed: PageTemplate | None = None  # by the template watcher, not yet in use
        # With a template folder, the first page waits for the watcher's first word on it:
        # a new pod serves the user's page from its first write, not the packaged one.
        self._template_pending = settings.template_dir is not None
        self._dirty = False
        self._not_before = 0.0
        self._backoff = Backoff(cap=WRITE_BACKOFF_CAP)
        self._published: tuple[object, ...] | None = None
        self._previous = previous
        self._history = (
            History(previous.membership.addresses, previous.changes) if previous else History()
        )
        self._triggers = TriggerTimes(started=time.time())
        self._latency = previous.programming_latency if previous else None
        self._packaged = packaged
        # Only this thread renders: the template in use, and the one to go back to when it
        # fails (the latest of the user's that rendered real data, else the packaged page).
        self._template: PageTemplate = packaged
        self._last_good: PageTemplate = packaged
        self._writer = PageWriter(settings.output_dir, packaged=packaged, metrics=metrics)

    def submit(self, snapshot: Snapshot) -> None:
        """Take the newest state (from the watch thread); older pending state is dropped."""
        with self._wake:
            self._snapshot = snapshot
            self._dirty = True
            self._wake.notify()

    def set_stale(self, since: dt.datetime | None) -> None:
        """The API is unreachable since then (None: reachable again); the page says so."""
        with self._wake:
            if since == self._stale_since:
                return
            self._stale_since = since
            self._dirty = self._has_page()
            self._wake.notify()

    def set_template(self, template: PageTemplate | None) -> None:
        """Render with a new, validated template (None: the packaged page) from the next page."""
        with self._wake:
            unused, self._handed = self._handed, template or self._packaged
            self._template_pending = False
            self._dirty = self._has_page()
            self._wake.notify()
        if unused is not None and unused is not self._packaged:
            unused.close()  # replaced before it was used

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
                    due = self._dirty and not self._template_pending
                    if due and delay <= 0:
                        break
                    if due:
                        self._health.beat(WORKER)
                        self._wake.wait(delay)
                    else:
                        # Nothing to do for as long as nothing happens: not a stuck worker.
                        self._health.waiting(WORKER)
                        self._wake.wait()
                if self._stop.is_set():
                    return
                self._health.beat(WORKER)
                snapshot, stale, handed = self._snapshot, self._stale_since, self._handed
                self._handed = None
                self._dirty = False
            if handed is not None:
                self._use(handed)
            self._publish(snapshot, stale)

    def _has_page(self) -> bool:
        return self._snapshot is not None or self._previous is not None

    def _publish(self, snapshot: Snapshot | None, stale: dt.datetime | None) -> None:
        if snapshot is not None:
            current, source = membership(snapshot.views), snapshot.source
            received_at, objects = snapshot.received_at, len(snapshot.views)
        elif self._previous is not None:
            current, source = self._previous.membership, self._previous.source
            received_at, objects = self._clock(), self._previous.objects
        else:
            return
        views = snapshot.views if snapshot else ()
        fresh = self._triggers.fresh(views)
        state = (current, self._template, source, stale, objects)
        if state == self._published:  # the page shows it already
            self._programmed(views, fresh)
            return
        if fresh:  # the page says how long the latest change took to reach it
            self._latency = max(0.0, time.time() - max(fresh.values()))
        change = (
            self._history.note(current.addresses, dt.datetime.now(dt.UTC)) if snapshot else None
        )
        if change is not None:  # the one info line of a change
            log.info(
                "membership_changed",
                added=change.added,
                added_count=change.added_count,
                removed=change.removed,
                removed_count=change.removed_count,
                ready=len(current.ready),
                terminating=len(current.terminating),
            )
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
            objects=objects,
            programming_latency=self._latency,
        )
        written = self._write(data)
        if written is not None:
            first = self._published is None
            self._published = (current, self._template, source, stale, objects)
            self._written(current, received_at, written, first=first)
            self._programmed(views, fresh)

    def _programmed(self, views: tuple[SliceView, ...], fresh: dict[str, float]) -> None:
        for latency in self._triggers.measure(views, fresh, time.time()):
            self._metrics.programming.observe(latency)

    def _write(self, data: PageData) -> list[str] | None:
        """Write data with the template in use, or the one that replaces it if it fails."""
        while True:
            template = self._template
            try:
                written = self._writer.write(data, template)
            except TemplateError as exc:
                if template is self._packaged:  # even the compact packaged page failed: a bug
                    log.error("render_failed", **exc.fields())
                    return None
                self._reject(template, exc)
                continue
            except WriteError as exc:
                self._write_failed(exc)
                return None
            if template is not self._packaged:
                self._keep_as_last_good(template)
            return written

    def _use(self, template: PageTemplate) -> None:
        """Render with template from now on; the one replaced is closed unless kept."""
        old, self._template = self._template, template
        if old is not self._last_good and old is not self._packaged:
            old.close()

    def _keep_as_last_good(self, template: PageTemplate) -> None:
        """Template rendered real data: it is the one to go back to from now on."""
        old, self._last_good = self._last_good, template
        if old is not template and old is not self._packaged:
            old.close()

    def _reject(self, template: PageTemplate, exc: TemplateError) -> None:
        """A template that fails on real data is rejected like one that does not compile."""
        template.close()
        if self._last_good is template:
            self._last_good = self._packaged
        self._template = self._last_good
        self._metrics.template_rejected.set(1)
        self._metrics.errors.labels(ErrorKind.TEMPLATE).inc()
        log.error("template_rejected", **exc.fields(), keeping=self._template.origin)

    def _written(
        self, current: Membership, received_at: float, written: list[str], *, first: bool
    ) -> None:
        now = self._clock()
        self._not_before = now + MIN_WRITE_INTERVAL
        self._backoff.reset()
        self._health.write_succeeded()
        latency = now - received_at
        self._metrics.writes.inc()
        self._metrics.last_write.set(time.time())
        self._metrics.event_to_write.observe(latency)
        for name, members in (
            ("ready", current.ready),
            ("terminating", current.terminating),
            ("not_ready", current.not_ready),
        ):
            self._metrics.endpoints.labels(name).set(len(members))
        # The first page is an info line (the pod is served from then on); later writes, a
        # few per change, are debug: at info a change is its membership_changed line.
        (log.info if first else log.debug)(
            "write",
            addresses=len(current.ready),
            files=written,
            latency_ms=round(latency * 1000, 2),
        )

    def _write_failed(self, exc: WriteError) -> None:
        delay = self._backoff.failure()
        self._not_before = self._clock() + delay
        with self._wake:
            self._dirty = True
        self._health.write_failed()
        self._metrics.errors.labels(ErrorKind.WRITE).inc()
        log.error(
            "write_failed",
            path=str(exc.path),
            errno=exc.cause.errno,
            reason=exc.cause.strerror,
            retry_in=round(delay, 2),
        )
