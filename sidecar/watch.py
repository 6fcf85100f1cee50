"""List-then-watch of a Service's endpoints, modelled on client-go's Reflector.

The official client's ``Watch.stream`` neither lists nor recovers from 410, and its model
deserialisation costs ~10x more per event than ``json.loads``; so this module calls the
client's list endpoints with ``_preload_content=False`` and reads the raw JSON itself
(``stream``). Failures are typed in ``api_errors``; this module decides what to do next.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar.api_errors import Expired, Malformed, WatchError, classify, is_timeout, status_event
from sidecar.backoff import Backoff
from sidecar.kinds import ErrorKind, RestartReason, SkipReason, Source
from sidecar.membership import SliceView, Snapshot, endpoints_view, slice_view
from sidecar.stream import lines, list_page, parse_event, read_body, resource_version

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from sidecar.health import HealthState
    from sidecar.metrics import Metrics

log = structlog.get_logger("sidecar.watch")

CONNECT_TIMEOUT = 10.0
LIST_PAGE_SIZE = 500
# A watch that ends this quickly without a single line is an error, not a timeout: resuming
# at once would be a hot loop.
MIN_HEALTHY_WATCH = 1.0
# The page says the list may be out of date once a retry has failed too: one failure that
# the next attempt repairs (a reset connection) is not worth two rewrites of every page.
STALE_AFTER_FAILURES = 2
WORKER = "watch"


# Which API the endpoints come from.
Api = Source

Param = str | int | bool | None
_USER = re.compile(r'User "([^"]*)"')


class _Resource:
    """The list/watch calls and parser of one API, with the selectors for one Service."""

    def __init__(self, api: Api, api_client: client.ApiClient, service: str) -> None:
        self.api = api
        if api is Api.ENDPOINT_SLICES:
            self.name = "endpointslices.discovery.k8s.io"
            self.call: Callable[..., Any] = client.DiscoveryV1Api(
                api_client
            ).list_namespaced_endpoint_slice
            # The EndpointSlice controller labels every slice of a Service with its name
            # (a DNS-1035 label, checked by the settings, so it cannot alter the selector).
            self.selector: dict[str, str] = {
                "label_selector": f"kubernetes.io/service-name={service}"
            }
            self.parse: Callable[[Mapping[str, Any]], SliceView] = slice_view
        else:
            self.name = "endpoints"
            self.call = client.CoreV1Api(api_client).list_namespaced_endpoints
            self.selector = {"field_selector": f"metadata.name={service}"}
            self.parse = endpoints_view


def _report(view: SliceView) -> None:
    """Log what a slice held that the API would not have let in (it was left out or cut)."""
    if view.invalid_addresses:
        log.warning("invalid_addresses", slice=view.name, addresses=view.invalid_addresses[:20])
    if view.malformed:
        log.warning("malformed_endpoints", slice=view.name, problems=view.malformed[:20])


def _interrupt(response: urllib3.BaseHTTPResponse) -> None:
    """Close the socket under a read in another thread: the read raises at once."""
    with contextlib.suppress(Exception):
        response.shutdown()


class EndpointWatcher:
    """Keeps the Service's endpoints in memory and reports every change.

    Run ``run()`` in its own thread; ``stop()`` from any other.
    """

    def __init__(  # noqa: PLR0913 - keyword-only wiring of collaborators
        self,
        *,
        api_client: client.ApiClient,
        service: str,
        namespace: str,
        idle_timeout: float,
        watch_timeout: int,
        on_change: Callable[[Snapshot], None],
        health: HealthState,
        metrics: Metrics,
        stop_event: threading.Event,
        on_stale: Callable[[dt.datetime | None], None] = lambda _since: None,
        on_unauthorized: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
    ) -> None:
        """Wire the watcher; nothing is requested before run()."""
        self._client = api_client
        self._service, self._namespace = service, namespace
        self._idle_timeout = idle_timeout
        self._watch_timeout = watch_timeout
        self._on_change, self._on_stale = on_change, on_stale
        self._on_unauthorized = on_unauthorized
        self._health, self._metrics = health, metrics
        self._stop = stop_event
        self._backoff = backoff or Backoff()
        self._views: dict[str, SliceView] = {}
        self._resource = _Resource(Api.ENDPOINT_SLICES, api_client, service)
        self._resource_version: str | None = None
        self._resync_wanted = False
        self._failures = 0
        self._trouble_since: dt.datetime | None = None
        self._logged_kinds: set[ErrorKind] = set()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._lock = threading.Lock()

    # ---- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask run() to return, interrupting a blocked read."""
        # The event first, then the response: _hold() stores the response first, then looks
        # at the event, both under the lock; so one of the two always sees the other.
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            _interrupt(response)

    @contextlib.contextmanager
    def _hold(self, response: urllib3.BaseHTTPResponse) -> Iterator[None]:
        """While reading response, stop() can interrupt it; the connection is released after."""
        with self._lock:
            self._response = response
            stopping = self._stop.is_set()
        if stopping:
            _interrupt(response)
        try:
            yield
        finally:
            with self._lock:
                self._response = None
            response.release_conn()

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

    # ---- list ----------------------------------------------------------------------------

    def _list(self) -> None:
        resource = _Resource(Api.ENDPOINT_SLICES, self._client, self._service)
        try:
            views, version = self._list_all(resource)
        except WatchError as exc:
            if exc.status != 404:  # noqa: PLR2004
                raise
            # discovery.k8s.io/v1 is not served (a very old or stripped-down cluster).
            resource = _Resource(Api.ENDPOINTS, self._client, self._service)
            views, version = self._list_all(resource)
            if self._resource.api is not Api.ENDPOINTS:
                log.warning("endpointslice_api_absent", fallback="v1 Endpoints")
        self._resource = resource
        for view in views:
            _report(view)
        self._views = {view.name: view for view in views if view.name}
        self._resource_version = version
        self._resync_wanted = False
        self._reached()
        self._metrics.lists.labels(resource.api.value).inc()
        log.info("list", api=resource.api.value, objects=len(views), resource_version=version)
        self._publish()

    def _list_all(self, resource: _Resource) -> tuple[list[SliceView], str]:
        """Page through the list; the resourceVersion of the first page is the snapshot's."""
        views: list[SliceView] = []
        continue_token: str | None = None
        version = ""
        while True:
            response = self._request(
                resource, verb="list", limit=LIST_PAGE_SIZE, _continue=continue_token
            )
            with self._hold(response):
                items, page_version, continue_token = list_page(read_body(response))
            self._health.beat(WORKER)
            version = version or page_version
            views.extend(resource.parse(item) for item in items)
            if continue_token is None or self._stop.is_set():
                if not version:
                    raise Malformed("list response without a resourceVersion")
                return views, version

    def _request(
        self, resource: _Resource, *, verb: str, **params: Param
    ) -> urllib3.BaseHTTPResponse:
        try:
            response: urllib3.BaseHTTPResponse = resource.call(
                self._namespace,
                **resource.selector,
                **{k: v for k, v in params.items() if v is not None},
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT, self._idle_timeout),
            )
        except ApiException as exc:
            error = classify(exc)
            if isinstance(error, WatchError) and error.kind is ErrorKind.FORBIDDEN:
                self._log_forbidden(error, verb=verb, resource=resource.name)
            raise error from exc
        return response

    # ---- watch ---------------------------------------------------------------------------

    def _watch(self) -> RestartReason:
        """Stream events until the server ends the watch; return why it ended."""
        started = time.monotonic()
        response = self._request(
            self._resource,
            verb="watch",
            watch=True,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            # Random within [max/2, max], so that replicas do not all re-watch at once.
            timeout_seconds=random.randint(self._watch_timeout // 2, self._watch_timeout),  # noqa: S311
        )
        # Accepted: the API server is there. If the stream then stays silent past the idle
        # timeout (a quiet namespace that gets no bookmarks, or a stalled connection), that
        # is no outage: re-watch at once, without escalating the backoff or marking the page.
        self._reached()
        count = 0
        try:
            with self._hold(response):
                for line in lines(response):
                    count += 1
                    self._health.beat(WORKER)
                    self._handle_line(line)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if self._stop.is_set() or not is_timeout(exc):
                raise
            log.info("watch_idle", silent_seconds=self._idle_timeout, events=count)
            return RestartReason.IDLE
        finally:
            if count:
                # The server accepted the watch and sent data: that was a healthy period, so
                # a reset that ends it backs off from the first step again (client-go's
                # Reflector re-watches at once after an established watch breaks).
                self._backoff.reset()
        if count == 0 and time.monotonic() - started < MIN_HEALTHY_WATCH:
            raise WatchError(ErrorKind.EMPTY_WATCH, "the watch ended at once without any event")
        return RestartReason.RESYNC if self._resync_wanted else RestartReason.TIMEOUT

    def _handle_line(self, line: bytes) -> None:
        try:
            event = parse_event(line)
        except Malformed as exc:
            # We may have missed a real change: repair with a list at the next reconnect.
            self._skip(exc.reason, line, exc)
            self._resync_wanted = True
            return
        self._metrics.events.labels(event.type).inc()
        if event.type == "ERROR":
            raise status_event(event.object)
        if event.type == "BOOKMARK":
            self._advance(event.object)
        else:
            self._apply(event.type, event.object)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        view = self._resource.parse(obj)
        if not view.name:
            self._skip(SkipReason.INVALID_OBJECT, b"", None)
            self._resync_wanted = True
            return
        _report(view)
        if kind == "DELETED":
            self._views.pop(view.name, None)
        else:
            self._views[view.name] = view
        self._advance(obj)
        self._publish()

    def _advance(self, obj: dict[str, Any]) -> None:
        # Bookmarks carry only a resourceVersion; remembering it lets a resumed watch skip
        # history the server may already have compacted away.
        version = resource_version(obj)
        if version is not None:
            self._resource_version = version

    def _skip(self, reason: SkipReason, line: bytes, exc: Exception | None) -> None:
        self._metrics.skipped_events.labels(reason).inc()
        log.warning(
            "event_skipped",
            reason=reason,
            line=line[:200].decode("utf-8", "replace"),
            error=str(exc)[:300] if exc else None,
        )

    def _publish(self) -> None:
        self._on_change(
            Snapshot(
                views=tuple(self._views.values()),
                source=self._resource.api,
                received_at=time.monotonic(),
            )
        )

    # ---- failures ------------------------------------------------------------------------

    def _reached(self) -> None:
        """The API answered: the failure streak, its logs and the stale page are over."""
        if self._failures:
            log.info("api_reachable", after_failures=self._failures)
        self._failures = 0
        self._logged_kinds.clear()
        self._metrics.watch_healthy.set(1)
        if self._trouble_since is not None:
            self._trouble_since = None
            self._on_stale(None)

    def _log_forbidden(self, error: WatchError, *, verb: str, resource: str) -> None:
        if ErrorKind.FORBIDDEN in self._logged_kinds:
            return
        self._logged_kinds.add(ErrorKind.FORBIDDEN)
        match = _USER.search(str(error))
        log.error(
            "forbidden",
            service_account=match.group(1) if match else "unknown",
            verb=verb,
            resource=resource,
            namespace=self._namespace,
            hint="grant get/list/watch on this resource to the ServiceAccount (Role + RoleBinding)",
            detail=str(error),
        )

    def _failed(self, error: WatchError) -> None:
        self._failures += 1
        self._metrics.errors.labels(error.kind).inc()
        self._metrics.watch_healthy.set(0)
        if self._trouble_since is None:
            self._trouble_since = dt.datetime.now(dt.UTC)
        if self._failures >= STALE_AFTER_FAILURES:
            self._on_stale(self._trouble_since)
        if error.kind is ErrorKind.MALFORMED:
            self._resource_version = None  # the state may be wrong: relist
        if error.kind is ErrorKind.UNAUTHORIZED:
            # A rotated token: read it again now, instead of waiting for the client's own
            # 60 s re-read timer; the first failure of a streak waits only the first step.
            self._on_unauthorized()
        delay = self._backoff.failure(at_least=error.retry_after)
        self._log_failure(error, delay)
        self._metrics.backoff_seconds.inc(delay)
        self._health.beat(WORKER)
        self._stop.wait(delay)

    def _log_failure(self, error: WatchError, delay: float) -> None:
        if error.kind is ErrorKind.FORBIDDEN:
            return  # logged once for the streak already, with what to grant
        # Connection errors are logged at every retry (the retry delays are the story);
        # data problems once per streak, so a server sending garbage cannot flood the log.
        if error.kind is ErrorKind.MALFORMED and ErrorKind.MALFORMED in self._logged_kinds:
            return
        self._logged_kinds.add(error.kind)
        log.warning(
            "api_error",
            kind=error.kind,
            status=error.status or None,
            detail=str(error)[:300],
            retry_in=round(delay, 2),
            host=self._client.configuration.host,
        )
