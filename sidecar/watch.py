"""List-then-watch of a Service's endpoints, modelled on client-go's Reflector.

The loop is free of I/O and of failure policy: the requests come from a source
(``listwatch.ListerWatcher``, or a script in the tests), the slices live in a store, and a
failure tracker (``failures``) says how long to wait and what to log. Failures are typed
in ``api_errors``; this module decides what to do next: relist, re-watch, or wait.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog
import urllib3

from sidecar.api_errors import Expired, Malformed, WatchError, is_timeout, status_event
from sidecar.kinds import ErrorKind, RestartReason, SkipReason, Source
from sidecar.membership import SliceView, Snapshot, parse_as
from sidecar.stream import parse_event, resource_version

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator, Mapping
    from contextlib import AbstractContextManager

    from sidecar.failures import FailureTracker
    from sidecar.health import HealthState
    from sidecar.metrics import Metrics

log = structlog.get_logger("sidecar.watch")

# A watch that ends this quickly without a single line is an error, not a timeout: resuming
# at once would be a hot loop.
MIN_HEALTHY_WATCH = 1.0
WORKER = "watch"


class ListWatchSource(Protocol):
    """Where the loop's lists and watches come from (client-go's ListerWatcher)."""

    def list(self, api: Source, stopping: Callable[[], bool]) -> tuple[list[SliceView], str]:
        """Every object of api and the list's resourceVersion."""

    def watch(
        self, api: Source, resource_version: str | None, timeout: int
    ) -> AbstractContextManager[Iterator[bytes]]:
        """The raw lines of a watch from resource_version, as they come."""

    def interrupt(self) -> None:
        """End a blocked read now, and any started after."""


class SliceStore:
    """The Service's slices as last seen, by name (client-go's Store)."""

    def __init__(self) -> None:
        """Empty until the first list."""
        self._views: dict[str, SliceView] = {}

    @property
    def views(self) -> Mapping[str, SliceView]:
        """The views held, by name (read-only: a parser re-uses their unchanged endpoints)."""
        return self._views

    def replace(self, views: list[SliceView]) -> None:
        """Everything a list returned, and nothing else."""
        self._views = {view.name: view for view in views if view.name}

    def apply(self, event_type: str, view: SliceView) -> None:
        """One watch event's change."""
        if event_type == "DELETED":
            self._views.pop(view.name, None)
        else:
            self._views[view.name] = view

    def snapshot(self, source: Source, received_at: float) -> Snapshot:
        """The whole state, for the publisher."""
        return Snapshot(views=tuple(self._views.values()), source=source, received_at=received_at)


def _report(view: SliceView) -> None:
    """Log what a slice held that the API would not have let in (it was left out or cut)."""
    if view.invalid_addresses:
        log.warning("invalid_addresses", slice=view.name, addresses=view.invalid_addresses[:20])
    if view.malformed:
        log.warning("malformed_endpoints", slice=view.name, problems=view.malformed[:20])


def _skipped(metrics: Metrics, reason: SkipReason, line: bytes, exc: Exception | None) -> None:
    """A watch line left out: counted and logged (what it began with, and why)."""
    metrics.skipped_events.labels(reason).inc()
    log.warning(
        "event_skipped",
        reason=reason,
        line=line[:200].decode("utf-8", "replace"),
        error=str(exc)[:300] if exc else None,
    )


def _list_any_api(
    source: ListWatchSource, stopping: Callable[[], bool], current: Source
) -> tuple[Source, list[SliceView], str]:
    """The EndpointSlices, or the v1 Endpoints where discovery.k8s.io/v1 is not served.

    A very old or stripped-down cluster answers 404; the change to Endpoints is said once.
    """
    try:
        views, version = source.list(Source.ENDPOINT_SLICES, stopping)
    except WatchError as exc:
        if exc.status != 404:  # noqa: PLR2004
            raise
    else:
        return Source.ENDPOINT_SLICES, views, version
    views, version = source.list(Source.ENDPOINTS, stopping)
    if current is not Source.ENDPOINTS:
        log.warning("endpointslice_api_absent", fallback="v1 Endpoints")
    return Source.ENDPOINTS, views, version


class EndpointWatcher:
    """Keeps the Service's endpoints in memory and reports every change.

    Run ``run()`` in its own thread; ``stop()`` from any other.
    """

    def __init__(  # noqa: PLR0913 - keyword-only wiring of collaborators
        self,
        *,
        source: ListWatchSource,
        failures: FailureTracker,
        watch_timeout: int,
        idle_timeout: float,
        on_change: Callable[[Snapshot], None],
        health: HealthState,
        metrics: Metrics,
        stop_event: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the watcher; nothing is requested before run()."""
        self._source, self._failures = source, failures
        self._watch_timeout, self._idle_timeout = watch_timeout, idle_timeout
        self._on_change = on_change
        self._health, self._metrics = health, metrics
        self._stop, self._clock = stop_event, clock
        self._store = SliceStore()
        self._api = Source.ENDPOINT_SLICES
        self._resource_version: str | None = None
        self._resync_wanted = False

    def stop(self) -> None:
        """Ask run() to return, interrupting a blocked read."""
        self._stop.set()
        self._source.interrupt()

    def run(self) -> None:
        """List, then watch, until stopped; every failure is classified and retried."""
        reason: RestartReason | ErrorKind = RestartReason.INITIAL
        while not self._stop.is_set():
            self._health.beat(WORKER)
            try:
                reason = self._cycle(reason)
            except Expired as exc:
                # Normal after etcd compaction or a long disconnect: start over from a list.
                log.info("watch_expired", detail=str(exc))
                self._resource_version = None
                reason = RestartReason.EXPIRED
            except WatchError as exc:
                reason = exc.kind
                self._failed(exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if self._stop.is_set():
                    break
                kind = ErrorKind.IDLE if is_timeout(exc) else ErrorKind.CONNECTION
                reason = RestartReason(kind.value)
                self._failed(WatchError(kind, f"{type(exc).__name__}: {exc}"))
            except Exception as exc:  # noqa: BLE001 - nothing may end the loop: classify it
                # Data we did not foresee broke a parser: the state may be wrong, so relist.
                reason = RestartReason.MALFORMED
                self._failed(Malformed(f"{type(exc).__name__}: {exc}"))

    def _cycle(self, reason: RestartReason | ErrorKind) -> RestartReason:
        if self._resource_version is None or self._resync_wanted:
            self._list()
        self._metrics.watch_restarts.labels(reason).inc()
        log.info("watch_start", reason=reason, resource_version=self._resource_version)
        return self._watch()

    def _list(self) -> None:
        api, views, version = _list_any_api(self._source, self._stop.is_set, self._api)
        self._api = api
        for view in views:
            _report(view)
        self._store.replace(views)
        self._resource_version = version
        self._resync_wanted = False
        self._failures.reached()
        self._metrics.lists.labels(api).inc()
        log.info("list", api=api.value, objects=len(views), resource_version=version)
        self._publish()

    def _watch(self) -> RestartReason:
        """Stream events until the server ends the watch; return why it ended."""
        started = self._clock()
        count = 0
        try:
            with self._source.watch(
                self._api, self._resource_version, self._watch_timeout
            ) as stream:
                # Accepted: the API server is there. If the stream then stays silent past the
                # idle timeout (a quiet namespace without bookmarks, or a stalled
                # connection), that is no outage: re-watch at once, without escalating
                # the backoff or marking the page.
                self._failures.reached()
                for line in stream:
                    count += 1
                    self._health.beat(WORKER)
                    self.handle_line(line)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if self._stop.is_set() or not is_timeout(exc):
                raise
            log.info("watch_idle", silent_seconds=self._idle_timeout, events=count)
            return RestartReason.IDLE
        finally:
            if count:
                self._failures.healthy_period()
        if count == 0 and self._clock() - started < MIN_HEALTHY_WATCH:
            raise WatchError(ErrorKind.EMPTY_WATCH, "the watch ended at once without any event")
        return RestartReason.RESYNC if self._resync_wanted else RestartReason.TIMEOUT

    def handle_line(self, line: bytes) -> None:
        """One line of a watch stream: apply it, skip it, or raise what it says."""
        try:
            event = parse_event(line)
        except Malformed as exc:
            # We may have missed a real change: repair with a list at the next reconnect.
            _skipped(self._metrics, exc.reason, line, exc)
            self._resync_wanted = True
            return
        self._metrics.events.labels(event.type).inc()
        if event.type == "ERROR":
            raise status_event(event.object)
        if event.type == "BOOKMARK":
            self._advance(event.object)
            return
        view = parse_as(self._api)(event.object, self._store.views)
        if not view.name:
            _skipped(self._metrics, SkipReason.INVALID_OBJECT, b"", None)
            self._resync_wanted = True
            return
        _report(view)
        self._store.apply(event.type, view)
        self._advance(event.object)
        self._publish()

    def _advance(self, obj: dict[str, Any]) -> None:
        # Bookmarks carry only a resourceVersion; remembering it lets a resumed watch skip
        # history the server may already have compacted away.
        version = resource_version(obj)
        if version is not None:
            self._resource_version = version

    def _publish(self) -> None:
        self._on_change(self._store.snapshot(self._api, self._clock()))

    def _failed(self, error: WatchError) -> None:
        if error.kind is ErrorKind.MALFORMED:
            self._resource_version = None  # the state may be wrong: relist
        delay = self._failures.failed(error)
        self._health.beat(WORKER)
        self._stop.wait(delay)
