"""List, then watch, a Service's endpoints and hand every change on (client-go's Reflector).

The loop owns neither the requests nor the policy: they come from a source (ListerWatcher,
or a script in the tests), each failure's kind picks a rule of ``policy.RULES``, and the
state goes to a sink (the publisher).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from sidecar.api.errors import ApiError, Malformed, from_event
from sidecar.api.listwatch import RESOURCES
from sidecar.api.policy import RULES
from sidecar.api.stream import parse_event, resource_version
from sidecar.metrics import ErrorKind, RestartReason, SkipReason, Source
from sidecar.page.membership import SliceView, Snapshot, parse_as

if TYPE_CHECKING:
    import datetime as dt
    import threading
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    from sidecar.api.policy import Streak
    from sidecar.health.state import HealthState
    from sidecar.metrics import Metrics

log = structlog.get_logger("sidecar.watch")

MIN_HEALTHY_WATCH = 1.0  # a watch ending sooner without a line is an error: no hot loop
WORKER = "watch"


class ListWatchSource(Protocol):
    """Where the loop's lists and watches come from (client-go's ListerWatcher)."""

    def list(self, api: Source) -> Iterator[tuple[list[SliceView], str]]:
        """Every object of api, a page at a time, each with its page's resourceVersion."""

    def watch(
        self, api: Source, resource_version: str | None, timeout: int
    ) -> AbstractContextManager[Iterator[bytes]]:
        """The raw lines of a watch from resource_version, as they come."""

    def reload_credentials(self) -> None:
        """Read the credentials again before the next request."""

    def interrupt(self) -> None:
        """End a blocked read now, and any started after."""


class Sink(Protocol):
    """Where the state goes (the publisher)."""

    def submit(self, snapshot: Snapshot) -> None:
        """The whole state after a change."""

    def set_stale(self, since: dt.datetime | None) -> None:
        """The API is unreachable since then (None: reachable again)."""


class Reflector:
    """Keeps the Service's endpoints in memory and hands every change on (run in a thread)."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring of collaborators
        self,
        *,
        source: ListWatchSource,
        sink: Sink,
        streak: Streak,
        watch_timeout: int,
        health: HealthState,
        metrics: Metrics,
        stop_event: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the loop; nothing is requested before run()."""
        self._source, self._sink, self._streak = source, sink, streak
        self._watch_timeout = watch_timeout
        self._health, self._metrics = health, metrics
        self._stop, self._clock = stop_event, clock
        self._store: dict[str, SliceView] = {}  # the slices as last seen, by name
        self._api = Source.ENDPOINT_SLICES
        self._resource_version: str | None = None
        self._resync_wanted = False
        self._said_empty = False

    def stop(self) -> None:
        """Ask run() to return, interrupting a blocked read."""
        self._stop.set()
        self._source.interrupt()

    def run(self) -> None:
        """List, then watch, until stopped; every failure is handled as its rule says."""
        reason: RestartReason | ErrorKind = RestartReason.INITIAL
        while not self._stop.is_set():
            self._health.beat(WORKER)
            try:
                reason = self._cycle(reason)
            except ApiError as exc:
                if self._stop.is_set():
                    break
                reason = exc.kind
                self._failed(exc)
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

    def _failed(self, error: ApiError) -> None:
        rule = RULES[error.kind]
        if rule.relist:
            self._resource_version = None
        if not rule.failure:
            getattr(log, rule.level)(f"watch_{error.kind}", detail=str(error)[:300])
            return
        if rule.reload_credentials:
            self._source.reload_credentials()
        delay = self._streak.failed(error, rule)
        self._sink.set_stale(self._streak.stale_since)
        self._health.beat(WORKER)
        self._stop.wait(delay)

    def _reached(self) -> None:
        """The API answered: a streak of failures is over, and the page no longer stale."""
        stale = self._streak.stale_since is not None
        self._streak.reached()
        if stale:
            self._sink.set_stale(None)

    def _list(self) -> None:
        """The whole state: the EndpointSlices, or v1 Endpoints where their API answers 404."""
        try:
            api, (views, version) = Source.ENDPOINT_SLICES, self._list_all(Source.ENDPOINT_SLICES)
        except ApiError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
            api, (views, version) = Source.ENDPOINTS, self._list_all(Source.ENDPOINTS)
            if self._api is not Source.ENDPOINTS:
                log.warning("endpointslice_api_absent", fallback="v1 Endpoints")
        self._api = api
        for view in views:
            _report(view)
        self._store = {view.name: view for view in views if view.name}
        self._resource_version = version
        self._resync_wanted = False
        self._reached()
        self._metrics.lists.labels(api).inc()
        log.info("list", api=api.value, objects=len(views), resource_version=version)
        self._publish()

    def _list_all(self, api: Source) -> tuple[list[SliceView], str]:
        """Every page; the resourceVersion of the first is the list's."""
        views: list[SliceView] = []
        version = ""
        for page, page_version in self._source.list(api):
            self._health.beat(WORKER)
            views.extend(page)
            version = version or page_version
            if self._stop.is_set():
                break
        if not version:
            raise Malformed("list response without a resourceVersion")
        return views, version

    def _watch(self) -> RestartReason:
        """Stream events until the server ends the watch; return why it ended."""
        started = self._clock()
        accepted, count = False, 0
        try:
            with self._source.watch(
                self._api, self._resource_version, self._watch_timeout
            ) as stream:
                # Accepted: the API server is there. A stream that then stays silent past the
                # idle timeout (no bookmarks, or a stalled connection) is no outage:
                # re-watch at once, without a backoff or a stale page.
                accepted = True
                self._reached()
                for line in stream:
                    count += 1
                    self._health.beat(WORKER)
                    self.handle_line(line)
        except ApiError as exc:
            if not accepted or exc.kind is not ErrorKind.IDLE or self._stop.is_set():
                raise
            log.info("watch_idle", events=count)
            return RestartReason.IDLE
        finally:
            if count:
                self._streak.healthy_period()
        if count == 0 and self._clock() - started < MIN_HEALTHY_WATCH:
            raise ApiError(
                ErrorKind.EMPTY_WATCH,
                "the watch ended at once without any event",
                verb="watch",
                resource=RESOURCES[self._api],
            )
        return RestartReason.RESYNC if self._resync_wanted else RestartReason.TIMEOUT

    def handle_line(self, line: bytes) -> None:
        """One line of a watch stream: apply it, skip it, or raise what it says."""
        try:
            event = parse_event(line)
        except Malformed as exc:
            # We may have missed a real change: repair with a list at the next reconnect.
            self._skipped(exc.reason, line, exc)
            return
        self._metrics.events.labels(event.type).inc()
        if event.type == "ERROR":
            raise from_event(event.object)
        if event.type == "BOOKMARK":
            self._advance(event.object)
            return
        view = parse_as(self._api)(event.object)
        if not view.name:
            self._skipped(SkipReason.INVALID_OBJECT, b"", None)
            return
        _report(view)
        if event.type == "DELETED":
            self._store.pop(view.name, None)
        else:
            self._store[view.name] = view
        self._advance(event.object)
        self._publish()

    def _skipped(self, reason: SkipReason, line: bytes, exc: Exception | None) -> None:
        """A watch line left out: counted, logged, and repaired by a list at the next watch."""
        self._resync_wanted = True
        self._metrics.skipped_events.labels(reason).inc()
        log.warning(
            "event_skipped",
            reason=reason,
            line=line[:200].decode("utf-8", "replace"),
            error=str(exc)[:300] if exc else None,
        )

    def _advance(self, obj: dict[str, Any]) -> None:
        # Bookmarks carry only a resourceVersion; remembering it lets a resumed watch skip
        # history the server may already have compacted away.
        version = resource_version(obj)
        if version is not None:
            self._resource_version = version

    def _publish(self) -> None:
        views = tuple(self._store.values())
        self._metrics.objects.set(len(views))
        if not views and not self._said_empty:  # once while it lasts: most likely a typo
            log.warning(
                "no_endpoint_objects",
                api=self._api.value,
                hint="no object is labelled with the Service's name in its namespace:"
                " is PODLISTER_SERVICE the Service's name?",
            )
        self._said_empty = not views
        self._sink.submit(Snapshot(views=views, source=self._api, received_at=self._clock()))


def _report(view: SliceView) -> None:
    """Log what a slice held that the API would not have let in (it was left out or cut)."""
    if view.invalid_addresses:
        log.warning("invalid_addresses", slice=view.name, addresses=view.invalid_addresses[:20])
    if view.malformed:
        log.warning("malformed_endpoints", slice=view.name, problems=view.malformed[:20])
