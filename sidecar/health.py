"""Health from real progress, and the HTTP server for /healthz, /readyz and /metrics."""

from __future__ import annotations

import os
import selectors
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.metrics import Metrics


class HealthState:
    """What the probes report, updated by the watch loop and the publisher.

    Live: the watch made progress (a list, an accepted watch, an event or a bookmark) within
    ``stale_after`` seconds. A loop that retries a dead API forever is not progress.
    Ready: a page has been written and the latest write succeeded.
    """

    def __init__(self, *, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Start live (the loop has just begun) and not ready."""
        self._stale_after = stale_after
        self._clock = clock
        self._last_progress = clock()
        self._page_written = False
        self._last_write_ok = False

    def progress(self) -> None:
        """The watch loop heard from the API server."""
        self._last_progress = self._clock()

    def write_succeeded(self) -> None:
        """A full set of pages is on disk."""
        self._page_written = self._last_write_ok = True

    def write_failed(self) -> None:
        """The output folder refused a write; the old pages stay but are going stale."""
        self._last_write_ok = False

    def seconds_since_progress(self) -> float:
        """How long the watch has been silent."""
        return self._clock() - self._last_progress

    @property
    def live(self) -> bool:
        """True while the watch is making progress."""
        return self.seconds_since_progress() <= self._stale_after

    @property
    def ready(self) -> bool:
        """True once a page exists and the output folder still takes writes."""
        return self._page_written and self._last_write_ok


class _Handler(BaseHTTPRequestHandler):
    state: ClassVar[HealthState]
    metrics: ClassVar[Metrics]
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            ok = self.state.live
            self.metrics.watch_healthy.set(1 if ok else 0)
            since = self.state.seconds_since_progress()
            self._reply(ok, f"{'ok' if ok else 'stalled'}: last progress {since:.1f}s ago\n")
        elif self.path == "/readyz":
            ok = self.state.ready
            self._reply(ok, "ok\n" if ok else "no page written yet, or the last write failed\n")
        elif self.path == "/metrics":
            body = generate_latest(self.metrics.registry)
            self._send(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _reply(self, ok: bool, text: str) -> None:  # noqa: FBT001 - private helper
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        """Probes every few seconds would drown the log: stay quiet."""


class HealthServer:
    """The probe and metrics endpoint, served from a daemon thread."""

    def __init__(self, *, host: str, port: int, state: HealthState, metrics: Metrics) -> None:
        """Bind now (so a busy port fails at start); serve once started."""
        handler = type("Handler", (_Handler,), {"state": state, "metrics": metrics})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="health", daemon=True)

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
