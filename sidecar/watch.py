"""List-then-watch of a Service's endpoints, modelled on client-go's Reflector.

The official client's ``Watch.stream`` neither lists nor recovers from 410, and its model
deserialisation costs ~10x more per event than ``json.loads``; so this module calls the
client's list endpoints with ``_preload_content=False`` and reads the raw JSON stream itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import random
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar.backoff import Backoff
from sidecar.membership import SliceView, endpoints_view, slice_view

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


class Api(enum.Enum):
    """Which API the endpoints come from."""

    ENDPOINT_SLICES = "endpointslices"
    ENDPOINTS = "endpoints"  # v1 Endpoints, only where discovery.k8s.io/v1 is not served


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole known state after a change, handed to the publisher."""

    views: tuple[SliceView, ...]
    api: Api
    received_at: float  # time.monotonic() when the change arrived


class Expired(Exception):  # noqa: N818 - named after the API's reason, "Expired"
    """The resourceVersion is too old (410 Gone): relist."""


class WatchError(Exception):
    """An API request failed; kind drives the backoff and the metric label."""

    def __init__(
        self, kind: str, message: str, *, status: int = 0, retry_after: float = 0.0
    ) -> None:
        """Classify one failure."""
        self.kind, self.status, self.retry_after = kind, status, retry_after
        super().__init__(message)


def _status_message(body: object) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        status = json.loads(text)
    except ValueError:
        return text[:300]
    return str(status.get("message", text))[:300] if isinstance(status, dict) else text[:300]


def _retry_after(headers: Mapping[str, str] | None) -> float:
    value = (headers or {}).get("Retry-After", "")
    return float(value) if value.isdigit() else 0.0


def classify(exc: ApiException) -> Exception:
    """Turn an HTTP error from the API into Expired or a WatchError of a known kind."""
    status = int(exc.status or 0)
    message = _status_message(exc.body)
    if status == 410:  # noqa: PLR2004
        return Expired(message)
    kind = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "throttled"}.get(
        status,
        "server" if status >= 500 else "client",  # noqa: PLR2004
    )
    return WatchError(
        kind, message or str(exc.reason), status=status, retry_after=_retry_after(exc.headers)
    )


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
            # The EndpointSlice controller labels every slice of a Service with its name.
            self.selector: dict[str, str] = {
                "label_selector": f"kubernetes.io/service-name={service}"
            }
            self.parse: Callable[[Mapping[str, Any]], SliceView] = slice_view
        else:
            self.name = "endpoints"
            self.call = client.CoreV1Api(api_client).list_namespaced_endpoints
            self.selector = {"field_selector": f"metadata.name={service}"}
            self.parse = endpoints_view


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
        backoff: Backoff | None = None,
    ) -> None:
        """Wire the watcher; nothing is requested before run()."""
        self._client = api_client
        self._service, self._namespace = service, namespace
        self._idle_timeout = idle_timeout
        self._watch_timeout = watch_timeout
        self._on_change = on_change
        self._health, self._metrics = health, metrics
        self._stop = stop_event
        self._backoff = backoff or Backoff()
        self._views: dict[str, SliceView] = {}
        self._resource = _Resource(Api.ENDPOINT_SLICES, api_client, service)
        self._resource_version: str | None = None
        self._resync_wanted = False
        self._forbidden_streak = False
        self._response: urllib3.BaseHTTPResponse | None = None
        self._lock = threading.Lock()

    # ---- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask run() to return, interrupting a blocked read."""
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            # Closing the socket from another thread makes the blocked read raise at once.
            with contextlib.suppress(Exception):
                response.shutdown()

    def run(self) -> None:
        """List, then watch, until stopped; every failure is classified and retried."""
        reason = "initial"
        while not self._stop.is_set():
            try:
                if self._resource_version is None or self._resync_wanted:
                    self._list()
                self._metrics.watch_restarts.labels(reason).inc()
                log.info("watch_start", reason=reason, resource_version=self._resource_version)
                reason = self._watch()
            except Expired as exc:
                # Normal after etcd compaction or a long disconnect: start over from a list.
                log.info("watch_expired", detail=str(exc))
                self._resource_version = None
                reason = "expired"
            except WatchError as exc:
                reason = exc.kind
                self._failed(exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if self._stop.is_set():
                    break
                reason = "idle" if _is_timeout(exc) else "connection"
                self._failed(WatchError(reason, f"{type(exc).__name__}: {exc}"))

    # ---- list ----------------------------------------------------------------------------

    def _list(self) -> None:
        resource = _Resource(Api.ENDPOINT_SLICES, self._client, self._service)
        try:
            views, resource_version = self._list_all(resource)
        except WatchError as exc:
            if exc.status != 404:  # noqa: PLR2004
                raise
            # discovery.k8s.io/v1 is not served (a very old or stripped-down cluster).
            resource = _Resource(Api.ENDPOINTS, self._client, self._service)
            views, resource_version = self._list_all(resource)
            if self._resource.api is not Api.ENDPOINTS:
                log.warning("endpointslice_api_absent", fallback="v1 Endpoints")
        self._resource = resource
        self._views = {view.name: view for view in views}
        self._resource_version = resource_version
        self._resync_wanted = False
        self._forbidden_streak = False
        self._metrics.lists.labels(resource.api.value).inc()
        self._health.progress()
        log.info(
            "list",
            api=resource.api.value,
            objects=len(views),
            resource_version=resource_version,
        )
        self._publish()

    def _list_all(self, resource: _Resource) -> tuple[list[SliceView], str]:
        """Page through the list; the resourceVersion of the first page is the snapshot's."""
        views: list[SliceView] = []
        continue_token: str | None = None
        resource_version = ""
        while True:
            body = self._get_json(resource, verb="list", _continue=continue_token)
            metadata = body.get("metadata") or {}
            resource_version = resource_version or str(metadata.get("resourceVersion", ""))
            views.extend(resource.parse(item) for item in body.get("items") or [])
            continue_token = metadata.get("continue") or None
            if continue_token is None or self._stop.is_set():
                return views, resource_version

    def _get_json(self, resource: _Resource, *, verb: str, **params: Param) -> dict[str, Any]:
        response = self._request(resource, verb=verb, limit=LIST_PAGE_SIZE, **params)
        try:
            body = json.loads(response.read())
        except ValueError as exc:
            raise WatchError("malformed", f"list response is not JSON: {exc}") from exc
        finally:
            response.release_conn()
        if not isinstance(body, dict):
            raise WatchError("malformed", "list response is not a JSON object")
        return body

    def _request(self, resource: _Resource, *, verb: str, **params: Param) -> urllib3.HTTPResponse:
        try:
            response: urllib3.HTTPResponse = resource.call(
                self._namespace,
                **resource.selector,
                **{k: v for k, v in params.items() if v is not None},
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT, self._idle_timeout),
            )
        except ApiException as exc:
            error = classify(exc)
            if isinstance(error, WatchError) and error.kind == "forbidden":
                self._log_forbidden(error, verb=verb, resource=resource.name)
            raise error from exc
        return response

    # ---- watch ---------------------------------------------------------------------------

    def _watch(self) -> str:
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
        # Being accepted is not progress: a stalled server accepts too. Lines and clean ends are.
        self._forbidden_streak = False
        with self._lock:
            self._response = response
        lines = 0
        try:
            for line in _lines(response):
                lines += 1
                self._health.progress()
                self._handle_line(line)
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
            if lines:
                # The server accepted the watch and sent data: that was a healthy period, so
                # a reset that ends it backs off from the first step again (client-go's
                # Reflector re-watches at once after an established watch breaks).
                self._backoff.reset()
        if lines == 0 and time.monotonic() - started < MIN_HEALTHY_WATCH:
            raise WatchError("empty_watch", "the watch ended at once without any event")
        self._health.progress()
        return "resync" if self._resync_wanted else "timeout"

    def _handle_line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a JSON object")  # noqa: TRY301
        except (ValueError, KeyError, TypeError) as exc:
            # We may have missed a real change: repair with a list at the next reconnect.
            self._skip("malformed", line, exc)
            self._resync_wanted = True
            return
        self._metrics.events.labels(kind if kind in _KNOWN_TYPES else "other").inc()
        if kind == "ERROR":
            self._watch_error(obj)
        elif kind == "BOOKMARK":
            self._advance(obj)
        elif kind in {"ADDED", "MODIFIED", "DELETED"}:
            self._apply(kind, obj)
        else:
            self._skip("unknown_type", line, None)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        view = self._resource.parse(obj)
        if not view.name:
            self._skip("invalid_object", b"", None)
            return
        if view.invalid_addresses:
            log.warning("invalid_addresses", slice=view.name, addresses=view.invalid_addresses)
        if kind == "DELETED":
            self._views.pop(view.name, None)
        else:
            self._views[view.name] = view
        self._advance(obj)
        self._publish()

    def _advance(self, obj: Mapping[str, Any]) -> None:
        # Bookmarks carry only a resourceVersion; remembering it lets a resumed watch skip
        # history the server may already have compacted away.
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(version, str) and version:
            self._resource_version = version

    def _watch_error(self, status: Mapping[str, Any]) -> None:
        code = int(status.get("code") or 0)
        message = str(status.get("message", ""))[:300]
        if code == 410 or status.get("reason") in {"Expired", "Gone"}:  # noqa: PLR2004
            raise Expired(message)
        raise WatchError("watch_error", f"ERROR event: {code} {message}", status=code)

    def _skip(self, reason: str, line: bytes, exc: Exception | None) -> None:
        self._metrics.skipped_events.labels(reason).inc()
        log.warning(
            "event_skipped",
            reason=reason,
            line=line[:200].decode("utf-8", "replace"),
            error=str(exc) if exc else None,
        )

    def _publish(self) -> None:
        self._on_change(
            Snapshot(
                views=tuple(self._views.values()),
                api=self._resource.api,
                received_at=time.monotonic(),
            )
        )

    # ---- failures ------------------------------------------------------------------------

    def _log_forbidden(self, error: WatchError, *, verb: str, resource: str) -> None:
        if self._forbidden_streak:
            return
        self._forbidden_streak = True
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
        self._metrics.errors.labels(error.kind).inc()
        delay = self._backoff.failure(at_least=error.retry_after)
        if error.kind != "forbidden":  # forbidden was logged once for the streak already
            log.warning(
                "api_error",
                kind=error.kind,
                status=error.status or None,
                detail=str(error),
                retry_in=round(delay, 2),
                host=self._client.configuration.host,
            )
        self._metrics.backoff_seconds.inc(delay)
        self._stop.wait(delay)


_KNOWN_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


def _is_timeout(exc: BaseException) -> bool:
    """True for a read that timed out (a silent stream), not for a refused connection."""
    seen: BaseException | None = exc
    while seen is not None:
        # urllib3 makes NewConnectionError a ConnectTimeoutError for compatibility.
        if isinstance(seen, urllib3.exceptions.NewConnectionError):
            return False
        if isinstance(seen, urllib3.exceptions.ReadTimeoutError | TimeoutError):
            return True
        seen = seen.__context__ or seen.__cause__
    return False


def _lines(response: urllib3.HTTPResponse) -> Iterator[bytes]:
    """Split a chunked watch stream into lines; a chunk may hold many events or part of one."""
    pending = b""
    for chunk in response.stream(None, decode_content=False):
        pending += chunk
        if b"\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if pending.strip():
        yield pending
