"""The HTTP server for /healthz, /readyz and /metrics: one thread, one selector, hard bounds.

Anything in the cluster may connect to this port, and the kubelet restarts the pod when its
probes go unanswered, so no client can be allowed to hold the server up:

- every connection has one deadline for the whole exchange (request and reply), not a
  timeout per read: a client trickling one byte every few seconds is cut off all the same;
- a request head larger than MAX_HEAD_BYTES is answered 431 and the connection closed, so
  memory does not grow with what clients send (at most MAX_CONNECTIONS x MAX_HEAD_BYTES);
- one request per connection (``Connection: close``): no idle keep-alive to hold a slot;
- when all MAX_CONNECTIONS slots are taken, the oldest connection is dropped to make room,
  so a probe that connects always gets a slot, whatever other clients hold.

No thread per connection: a flood of clients costs sockets, not threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from sidecar.health.state import HealthState
    from sidecar.metrics import Metrics

# The whole exchange must be over within this time. The kubelet's probes time out after 1 s
# by default, so nothing legitimate takes longer.
REQUEST_DEADLINE = 2.0
# A request head (request line and headers) larger than this is refused with 431: probes and
# scrapers send a few hundred bytes.
MAX_HEAD_BYTES = 8192
# Connections open at once; past this the oldest is dropped for the newcomer.
MAX_CONNECTIONS = 64
_ACCEPTS_PER_WAKE = 64  # accept in batches, so a flood cannot starve the open connections
_RECV_BYTES = 4096
_ALLOWED = "GET, HEAD"
_TEXT = "text/plain; charset=utf-8"


class _Connection:
    """One client: what it sent so far, what we still owe it, and when it must be done."""

    __slots__ = ("deadline", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = bytearray()
        self.outbox = b""


def _response(status: HTTPStatus, body: bytes, content_type: str, *, head: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        lines.append(f"Allow: {_ALLOWED}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def _describe(stuck: dict[str, float]) -> str:
    return ", ".join(f"{worker} silent {seconds:.0f}s" for worker, seconds in sorted(stuck.items()))


def answer(head: bytes, *, state: HealthState, metrics: Metrics) -> bytes:
    """The whole reply to one request head (request line and headers, without the blank line)."""
    request_line = head.split(b"\r\n", 1)[0]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):  # noqa: PLR2004 - method, target, version
        return _response(HTTPStatus.BAD_REQUEST, b"bad request\n", _TEXT, head=False)
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in {b"GET", b"HEAD"}:
        return _response(HTTPStatus.METHOD_NOT_ALLOWED, b"", _TEXT, head=False)
    is_head = method == b"HEAD"
    if target == b"/healthz":
        stuck = state.stuck()
        ok, text = not stuck, ("ok\n" if not stuck else f"stuck: {_describe(stuck)}\n")
    elif target == b"/readyz":
        ok = state.ready
        text = "ok\n" if ok else "no page written yet, or the last write failed\n"
    elif target == b"/metrics":
        body = generate_latest(metrics.registry)
        return _response(HTTPStatus.OK, body, CONTENT_TYPE_LATEST, head=is_head)
    else:
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", _TEXT, head=is_head)
    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
    return _response(status, text.encode(), _TEXT, head=is_head)


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # One socket for both families: "::" also answers IPv4 probes (mapped).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)  # noqa: FBT003 - the socket API
    except OSError:
        sock.close()
        raise
    return sock


def _bind(host: str, port: int) -> socket.socket:
    try:
        return _listener(host, port)
    except OSError as exc:
        # "::" on a host without IPv6 (ipv6.disable=1): answer on IPv4 instead.
        if host == "::" and exc.errno in {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}:
            return _listener("0.0.0.0", port)  # noqa: S104
        raise


class HealthServer:
    """The probe and metrics endpoint, served from one daemon thread."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        state: HealthState,
        metrics: Metrics,
        request_deadline: float = REQUEST_DEADLINE,
    ) -> None:
        """Bind now (so a busy port fails at start); serve once started."""
        self._state, self._metrics = state, metrics
        self._deadline = request_deadline
        self._listener = _bind(host, port)
        self._connections: dict[socket.socket, _Connection] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="health", daemon=True)

    @property
    def active_connections(self) -> int:
        """Connections open now (at most MAX_CONNECTIONS)."""
        return len(self._connections)

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the port is real even when 0 was asked for)."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close every connection and release the port."""
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        for connection in list(self._connections.values()):
            self._close(connection)
        self._selector.close()
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    # ---- the loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        # No polling: the selector sleeps until a socket is ready, the nearest deadline
        # passes, or stop() writes to the pipe. An idle sidecar does not wake at all.
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        while True:
            timeout = None
            if self._connections:
                nearest = min(c.deadline for c in self._connections.values())
                timeout = max(0.0, nearest - time.monotonic())
            for key, events in self._selector.select(timeout):
                if key.fileobj == self._wake_read:
                    return
                if key.fileobj is self._listener:
                    self._accept()
                elif isinstance(key.data, _Connection):
                    self._ready(key.data, events)
            self._expire()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors or an aborted handshake: the next wake retries
            if len(self._connections) >= MAX_CONNECTIONS:
                # Make room: the oldest is the one most likely to be holding a slot on purpose.
                oldest = min(self._connections.values(), key=lambda c: c.deadline)
                self._close(oldest)
            sock.setblocking(False)  # noqa: FBT003 - the socket API
            connection = _Connection(sock, time.monotonic() + self._deadline)
            self._connections[sock] = connection
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _ready(self, connection: _Connection, events: int) -> None:
        try:
            if events & selectors.EVENT_READ and not connection.outbox:
                self._read(connection)
            if events & selectors.EVENT_WRITE and connection.outbox:
                self._write(connection)
        except OSError:
            # A client that hangs up or resets is the client's business: nothing is logged.
            self._close(connection)

    def _read(self, connection: _Connection) -> None:
        data = connection.sock.recv(_RECV_BYTES)
        if not data:
            self._close(connection)
            return
        connection.inbox += data
        end = connection.inbox.find(b"\r\n\r\n")
        if end < 0 and len(connection.inbox) <= MAX_HEAD_BYTES:
            return  # more to come, within the deadline
        if end < 0 or end > MAX_HEAD_BYTES:
            reply = _response(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                b"request head too large\n",
                _TEXT,
                head=False,
            )
        else:
            reply = answer(bytes(connection.inbox[:end]), state=self._state, metrics=self._metrics)
        connection.inbox = bytearray()  # nothing more is read from this client
        connection.outbox = reply
        self._selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        sent = connection.sock.send(connection.outbox)
        connection.outbox = connection.outbox[sent:]
        if not connection.outbox:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_WR)
            self._close(connection)

    def _expire(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self._connections.values() if c.deadline <= now]:
            self._close(connection)

    def _close(self, connection: _Connection) -> None:
        if self._connections.pop(connection.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(connection.sock)
        connection.sock.close()
