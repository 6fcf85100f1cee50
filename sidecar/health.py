"""Health from real progress, and the HTTP server for /healthz, /readyz and /metrics."""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.metrics import Metrics

# A probe or scrape that has not sent its request within this time is dropped: the kubelet's
# probes time out after 1 s by default, so nothing legitimate waits this long.
REQUEST_TIMEOUT = 5.0
# At most this many connections are served at once; more are closed at once. Probes and
# one scraper need a handful; a flood of half-sent requests must not become a flood of threads.
MAX_CONNECTIONS = 16


class HealthState:
    """What the probes report, updated by the workers and the publisher.

    Live: no worker is stuck. Each worker beats while it works (a watch line, a retry, a
    write) and says when it waits for news with no bound; one whose last beat is older than
    ``stuck_after`` while it is not waiting is stuck. An unreachable API is not a stuck
    process: the watch keeps beating while it backs off, and restarting would not help.
    Ready: a page exists (written now, or left by an earlier run) and the latest write
    succeeded.
    """

    def __init__(
        self,
        *,
        stuck_after: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start live (nothing has had time to get stuck) and not ready."""
        self._stuck_after = stuck_after
        self._metrics = metrics
        self._clock = clock
        self._beats: dict[str, float | None] = {}
        self._page = False
        self._last_write_ok = False
        self._lock = threading.Lock()
        self._set_ready_gauge()

    def beat(self, worker: str) -> None:
        """The worker is making progress."""
        self._beats[worker] = self._clock()

    def waiting(self, worker: str) -> None:
        """The worker is blocked waiting for news that may take forever: not stuck."""
        self._beats[worker] = None

    def page_restored(self) -> None:
        """An earlier run's page for this Service is in the folder and can be served."""
        with self._lock:
            self._page = self._last_write_ok = True
        self._set_ready_gauge()

    def write_succeeded(self) -> None:
        """A full set of pages is on disk."""
        with self._lock:
            self._page = self._last_write_ok = True
        self._set_ready_gauge()

    def write_failed(self) -> None:
        """The output folder refused a write; the old pages stay but are going stale."""
        with self._lock:
            self._last_write_ok = False
        self._set_ready_gauge()

    def stuck(self) -> dict[str, float]:
        """Workers that have not beaten for longer than stuck_after, with the seconds since."""
        now = self._clock()
        silent = {worker: now - at for worker, at in list(self._beats.items()) if at is not None}
        return {worker: s for worker, s in silent.items() if s > self._stuck_after}

    @property
    def live(self) -> bool:
        """True while no worker is stuck."""
        return not self.stuck()

    @property
    def ready(self) -> bool:
        """True once a page exists and the output folder still takes writes."""
        return self._page and self._last_write_ok

    def _set_ready_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.ready.set(1 if self.ready else 0)


class _Handler(BaseHTTPRequestHandler):
    state: ClassVar[HealthState]
    metrics: ClassVar[Metrics]
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        if self.path == "/healthz":
            stuck = self.state.stuck()
            text = "ok\n" if not stuck else f"stuck: {_describe(stuck)}\n"
            self._reply(not stuck, text)
        elif self.path == "/readyz":
            ok = self.state.ready
            self._reply(ok, "ok\n" if ok else "no page written yet, or the last write failed\n")
        elif self.path == "/metrics":
            body = generate_latest(self.metrics.registry)
            self._send(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self.close_connection = True
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    # 405 rather than the stdlib's 501 for methods that exist but are not served here.
    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815 - stdlib's names
    do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

    def _reply(self, ok: bool, text: str) -> None:  # noqa: FBT001 - private helper
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        """Probes every few seconds would drown the log: stay quiet."""


def _describe(stuck: dict[str, float]) -> str:
    return ", ".join(f"{worker} silent {seconds:.0f}s" for worker, seconds in sorted(stuck.items()))


class _Server(ThreadingHTTPServer):
    """Bounded: a connection cap, a read timeout, and no tracebacks for clients that leave."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[_Handler], family: int) -> None:
        self.address_family = family
        self._active = 0
        self._count_lock = threading.Lock()
        super().__init__(address, handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6:
                # One socket for both families: "::" also answers IPv4 probes (mapped).
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    @property
    def active_connections(self) -> int:
        """Connections being served now."""
        return self._active

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        with self._count_lock:
            full = self._active >= MAX_CONNECTIONS
            if not full:
                self._active += 1
        if full:
            # Over the cap: close at once rather than start another thread.
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._active -= 1

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        """A client that hangs up or times out is the client's business: nothing is printed.

        socketserver's default prints a multi-line traceback, which would break the
        one-JSON-object-per-line log.
        """


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind(host: str, port: int, handler: type[_Handler]) -> _Server:
    try:
        return _Server((host, port), handler, _family(host))
    except OSError as exc:
        # "::" on a host without IPv6 (ipv6.disable=1): answer on IPv4 instead.
        if host == "::" and exc.errno in {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}:
            return _Server(("0.0.0.0", port), handler, socket.AF_INET)  # noqa: S104
        raise


class HealthServer:
    """The probe and metrics endpoint, served from a daemon thread."""

    def __init__(self, *, host: str, port: int, state: HealthState, metrics: Metrics) -> None:
        """Bind now (so a busy port fails at start); serve once started."""
        handler = type("Handler", (_Handler,), {"state": state, "metrics": metrics})
        self._server = _bind(host, port, handler)
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="health", daemon=True)

    @property
    def active_connections(self) -> int:
        """Connections being served now (at most MAX_CONNECTIONS)."""
        return self._server.active_connections

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the port is real even when 0 was asked for)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self._server.server_close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _serve(self) -> None:
        # Not serve_forever(): it wakes every poll_interval (0.5 s) to look for shutdown,
        # which was most of the idle sidecar's CPU. Here a pipe wakes the loop instead.
        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj == self._wake_read for key, _ in ready):
                    return
                self._server.handle_request()
