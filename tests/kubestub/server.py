"""An HTTP server that answers list and watch for EndpointSlices and Endpoints like kube-apiserver.

What it models: a global resourceVersion, label and field selectors, paginated lists with
consistent continue tokens, chunked watch streams resumed from a resourceVersion, bookmarks,
server-side watch timeouts, compaction (410 Expired), and 403/404/429/5xx responses with
kube-style Status bodies. Like kube-apiserver (HTTP/1.1), it keeps a connection open after a
watch ends, for the client's next request. Faults are methods: ``stall``, ``drop_watches``,
``end_watches``, ``expire_watches``, ``hold_final_chunks``, ``inject_line``, ``fail_next``,
``forbid``, ``disable_slices``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import queue
import select
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

from kubestub.selectors import Predicate, field_selector, label_selector
from support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

SLICES = "endpointslices"
ENDPOINTS = "endpoints"
_ROUTES = {
    ("apis", "discovery.k8s.io", "v1"): SLICES,
    ("api", "v1"): ENDPOINTS,
}
_KINDS = {SLICES: ("EndpointSliceList", "discovery.k8s.io/v1"), ENDPOINTS: ("EndpointsList", "v1")}
_RESOURCE_NAMES = {SLICES: ("endpointslices", "discovery.k8s.io"), ENDPOINTS: ("endpoints", "")}


@dataclasses.dataclass(frozen=True)
class Request:
    """One request the stand-in answered, for tests to assert on."""

    method: str
    resource: str
    verb: str  # "list" or "watch"
    params: dict[str, str]
    at: float
    client_port: int  # the client's end of the connection: equal ports, one kept-alive connection
    user_agent: str = ""


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status as the API server sends it in error responses and ERROR events."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Watch:
    """One open watch: its filter and the queue its handler thread drains."""

    def __init__(self, resource: str, namespace: str, predicate: Predicate) -> None:
        self.resource, self.namespace, self.predicate = resource, namespace, predicate
        self.queue: queue.Queue[tuple[str, bytes]] = queue.Queue()


def _event_line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


class ApiStandIn:
    """The stand-in's state, its fault switches and its HTTP server."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        user: str = "system:serviceaccount:default:podlister",
        bookmark_interval: float | None = None,
        max_watch_seconds: float | None = None,
        max_page_size: int | None = None,
    ) -> None:
        """Create an empty API; call start() to serve it."""
        self.user = user
        self.bookmark_interval = bookmark_interval
        self.max_watch_seconds = max_watch_seconds
        self.max_page_size = max_page_size
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._history: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self._resource_version = 1000
        self._compacted = 0
        self._watches: list[_Watch] = []
        self._continues: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._tokens = itertools.count(1)
        self._forbidden: set[str] = set()
        self._token: str | None = None
        self._slices_served = True
        self._failures: list[tuple[int, float | None]] = []
        self._stalled = threading.Event()
        self._final_chunks_held = threading.Event()
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 128
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for a kubeconfig's ``server``."""
        host = self._server.server_address[0]
        assert isinstance(host, str)
        return f"http://{host}:{self._server.server_port}"

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every watch and the listening socket."""
        self._stopping.set()
        self.drop_watches()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        """Start, for ``with``."""
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        """Stop, for ``with``."""
        self.stop()

    # ---- state ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out."""
        with self._lock:
            return self._resource_version

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (an EndpointSlice or Endpoints); returns the stored copy."""
        resource = SLICES if obj["kind"] == "EndpointSlice" else ENDPOINTS
        metadata = obj["metadata"]
        key = (resource, metadata.get("namespace", "default"), metadata["name"])
        with self._lock:
            kind = "MODIFIED" if key in self._objects else "ADDED"
            return self._record(kind, key, copy.deepcopy(obj))

    def delete(self, resource: str, name: str, namespace: str = "default") -> None:
        """Delete an object; watchers get DELETED with its last state."""
        key = (resource, namespace, name)
        with self._lock:
            obj = self._objects.get(key)
            if obj is not None:
                self._record("DELETED", key, copy.deepcopy(obj))

    def objects(self, resource: str, namespace: str = "default") -> list[dict[str, Any]]:
        """Current objects of one resource, for tests that compute the truth."""
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(self._objects.items())
                if res == resource and ns == namespace
            ]

    def _record(self, kind: str, key: tuple[str, str, str], obj: dict[str, Any]) -> dict[str, Any]:
        self._resource_version += 1
        rv = self._resource_version
        obj["metadata"]["resourceVersion"] = str(rv)
        obj["metadata"].setdefault("namespace", key[1])
        if kind == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._history.append((rv, kind, key[0], key[1], obj))
        line = _event_line(kind, obj)
        for watch in self._watches:
            if watch.resource == key[0] and watch.namespace == key[1] and watch.predicate(obj):
                watch.queue.put(("line", line))
        return obj

    # ---- faults --------------------------------------------------------------------------

    def stall(self, *, stalled: bool = True) -> None:
        """Open and new watches send nothing (events wait) until un-stalled."""
        if stalled:
            self._stalled.set()
        else:
            self._stalled.clear()
            self._broadcast("wake", b"")

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """Watches send nothing inside the block; what queued up flows after it."""
        self.stall()
        try:
            yield
        finally:
            self.stall(stalled=False)

    def drop_watches(self) -> None:
        """Reset every open watch connection, as a crashing proxy would."""
        self._broadcast("drop", b"")

    def end_watches(self) -> None:
        """End every open watch cleanly, as the server's timeoutSeconds does."""
        self._broadcast("end", b"")

    def compact(self) -> None:
        """Forget history up to now: older resourceVersions get 410 Expired."""
        with self._lock:
            self._compacted = self._resource_version
            self._history.clear()
            self._continues.clear()

    def expire_watches(self) -> None:
        """Compact, and tell every open watch its resourceVersion is gone (ERROR 410)."""
        self.compact()
        line = _event_line("ERROR", status_body(410, "Expired", "too old resource version"))
        self._broadcast("expire", line)

    def hold_final_chunks(self, *, held: bool = True) -> None:
        """After an ERROR event, a stream's final chunk waits until the client sends or closes.

        On a real network the final chunk can arrive after the client stopped reading at the
        ERROR event; a client that then reuses the connection reads it as its next status line.
        """
        if held:
            self._final_chunks_held.set()
        else:
            self._final_chunks_held.clear()

    def inject_line(self, line: bytes) -> None:
        """Send a raw line (malformed JSON, an unknown event type) on every open watch."""
        self._broadcast("raw", line.rstrip(b"\n") + b"\n")

    def fail_next(self, status: int, *, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``count`` API requests with this status."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def forbid(self, *verbs: str) -> None:
        """Answer these verbs ("list", "watch") with 403 until allow() is called."""
        with self._lock:
            self._forbidden = set(verbs)

    def require_token(self, token: str | None) -> None:
        """Answer 401 to requests without this bearer token (None: accept any)."""
        with self._lock:
            self._token = token

    def allow(self) -> None:
        """Grant every verb again."""
        self.forbid()

    def disable_slices(self, *, disabled: bool = True) -> None:
        """Pretend discovery.k8s.io/v1 is not served: its paths answer 404."""
        self._slices_served = not disabled

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now."""
        with self._lock:
            return len(self._watches)

    def wait_watching(self, count: int = 1, *, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` watch streams are open, so a fault reaches them."""
        wait_until(
            lambda: self.open_watches >= count, timeout=timeout, what=f"{count} open watch(es)"
        )

    def requests_for(self, verb: str) -> list[Request]:
        """Requests with this verb so far."""
        with self._lock:
            return [r for r in self.requests if r.verb == verb]

    def _broadcast(self, action: str, payload: bytes) -> None:
        with self._lock:
            for watch in self._watches:
                watch.queue.put((action, payload))

    # ---- request handling (called from handler threads) ---------------------------------

    def _check(
        self, verb: str, resource: str, namespace: str, authorization: str = ""
    ) -> tuple[int, dict[str, Any]] | None:
        with self._lock:
            if self._token is not None and authorization != f"Bearer {self._token}":
                return 401, status_body(401, "Unauthorized", "Unauthorized")
            if self._failures:
                status, retry_after = self._failures.pop(0)
                body = status_body(status, "InjectedFailure", f"injected failure {status}")
                if retry_after is not None:
                    body["details"] = {"retryAfterSeconds": retry_after}
                return status, body
            if resource == SLICES and not self._slices_served:
                return 404, status_body(
                    404, "NotFound", "the server could not find the requested resource"
                )
            if verb in self._forbidden:
                name, group = _RESOURCE_NAMES[resource]
                full = f"{name}.{group}" if group else name
                message = (
                    f'{full} is forbidden: User "{self.user}" cannot {verb} resource "{name}" '
                    f'in API group "{group}" in the namespace "{namespace}"'
                )
                return 403, status_body(403, "Forbidden", message)
        return None

    def _list(
        self, resource: str, namespace: str, params: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        predicate = _predicate(params)
        limit = int(params.get("limit") or 0)
        if self.max_page_size:
            # Servers may return fewer items than asked for; clients must follow continue.
            limit = min(limit or self.max_page_size, self.max_page_size)
        with self._lock:
            token = params.get("continue")
            if token:
                if token not in self._continues:
                    return 410, status_body(
                        410, "Expired", "the provided continue parameter is too old"
                    )
                rv, remaining = self._continues.pop(token)
            else:
                rv = self._resource_version
                remaining = [
                    copy.deepcopy(obj)
                    for (res, ns, _), obj in sorted(self._objects.items())
                    if res == resource and ns == namespace and predicate(obj)
                ]
            page, rest = (remaining[:limit], remaining[limit:]) if limit else (remaining, [])
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if rest:
                next_token = f"c{next(self._tokens)}"
                self._continues[next_token] = (rv, rest)
                metadata["continue"] = next_token
        kind, api_version = _KINDS[resource]
        return 200, {"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": page}

    def _open_watch(
        self, resource: str, namespace: str, params: dict[str, str]
    ) -> tuple[_Watch, list[bytes]]:
        watch = _Watch(resource, namespace, _predicate(params))
        requested = params.get("resourceVersion", "")
        backlog: list[bytes] = []
        with self._lock:
            if requested not in {"", "0"} and int(requested) < self._compacted:
                line = _event_line("ERROR", status_body(410, "Expired", "too old resource version"))
                watch.queue.put(("expire", line))
            elif requested in {"", "0"}:
                backlog = [
                    _event_line("ADDED", obj)
                    for (res, ns, _), obj in sorted(self._objects.items())
                    if res == resource and ns == namespace and watch.predicate(obj)
                ]
            else:
                since = int(requested)
                backlog = [
                    _event_line(kind, obj)
                    for rv, kind, res, ns, obj in self._history
                    if rv > since and res == resource and ns == namespace and watch.predicate(obj)
                ]
            self._watches.append(watch)
        return watch, backlog

    def _close_watch(self, watch: _Watch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)

    def _bookmark(self, resource: str) -> bytes:
        kind, api_version = _KINDS[resource]
        with self._lock:
            rv = self._resource_version
        obj = {
            "kind": kind.removesuffix("List"),
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(rv)},
        }
        return _event_line("BOOKMARK", obj)


def _predicate(params: dict[str, str]) -> Predicate:
    labels = label_selector(params.get("labelSelector", ""))
    fields = field_selector(params.get("fieldSelector", ""))
    return lambda obj: labels(obj) and fields(obj)


class _Handler(BaseHTTPRequestHandler):
    api: ApiStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: tests assert on ``ApiStandIn.requests`` instead."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        route = _route(url.path)
        if route is None:
            self._json(
                404,
                status_body(404, "NotFound", "the server could not find the requested resource"),
            )
            return
        resource, namespace = route
        verb = "watch" if params.get("watch") in {"true", "1"} else "list"
        with self.api._lock:
            self.api.requests.append(
                Request(
                    "GET",
                    resource,
                    verb,
                    params,
                    time.monotonic(),
                    self.client_address[1],
                    self.headers.get("User-Agent", ""),
                )
            )
        refused = self.api._check(verb, resource, namespace, self.headers.get("Authorization", ""))
        if refused is not None:
            status, body = refused
            headers = {}
            retry = (body.get("details") or {}).get("retryAfterSeconds")
            if retry is not None:
                headers["Retry-After"] = str(int(retry))
            self._json(status, body, headers)
            return
        try:
            if verb == "list":
                self._json(*self.api._list(resource, namespace, params))
            else:
                self._stream_watch(resource, namespace, params)
        except ValueError as exc:
            self._json(400, status_body(400, "BadRequest", str(exc)))

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream_watch(self, resource: str, namespace: str, params: dict[str, str]) -> None:
        api = self.api
        watch, backlog = api._open_watch(resource, namespace, params)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            self._serve_events(watch, backlog, params)
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            api._close_watch(watch)

    def _serve_events(self, watch: _Watch, backlog: list[bytes], params: dict[str, str]) -> None:
        api = self.api
        timeout = float(params.get("timeoutSeconds") or 1800)
        if api.max_watch_seconds is not None:
            timeout = min(timeout, api.max_watch_seconds)
        deadline = time.monotonic() + timeout
        interval = api.bookmark_interval
        bookmarks = params.get("allowWatchBookmarks") == "true" and interval is not None
        pending = list(backlog)
        while True:
            if not api._stalled.is_set():
                for line in pending:
                    self._chunk(line)
                pending.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(remaining, interval) if interval is not None and bookmarks else remaining
            try:
                action, payload = watch.queue.get(timeout=wait)
            except queue.Empty:
                if bookmarks and not api._stalled.is_set():
                    self._chunk(api._bookmark(watch.resource))
                continue
            if action == "drop":
                # No terminating chunk: the client sees the connection break mid-stream.
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if action == "end":
                break
            if action == "expire":
                # Nothing after a 410: the client must relist, queued events are moot.
                pending.clear()
                self._chunk(payload)
                if api._final_chunks_held.is_set():
                    # Readable: the client's next request, or its close (EOF).
                    select.select([self.connection], [], [], max(0.0, deadline - time.monotonic()))
                break
            if action in {"line", "raw"}:
                pending.append(payload)
        if not api._stalled.is_set():
            for line in pending:
                self._chunk(line)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _route(path: str) -> tuple[str, str] | None:
    """(resource, namespace) for a namespaced collection path we serve, else None."""
    parts = [p for p in path.split("/") if p]
    for prefix, resource in _ROUTES.items():
        n = len(prefix)
        if (
            tuple(parts[:n]) == prefix
            and len(parts) == n + 3
            and parts[n] == "namespaces"
            and parts[n + 2] == resource
        ):
            return resource, parts[n + 1]
    return None
