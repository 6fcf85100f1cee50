"""The HTTP server for /healthz, /readyz and /metrics: one thread, one selector, hard bounds.

Anything in the cluster may connect to this port, and the kubelet restarts the pod when its
probes go unanswered, so no client may hold the server up: one deadline for the whole
exchange (a client dripping a byte at a time is cut off all the same); a request head over
MAX_HEAD_BYTES gets 431; one request per connection; at most MAX_CONNECTIONS open, and when a
newcomer needs a slot, every connection that holds a complete request is answered before the
oldest incomplete one is dropped. No thread per connection: a flood costs sockets, not
threads (80 drippers: 98 of 98 probes answered, docs/operations.md).
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

# The kubelet's probes time out after 1 s by default: nothing legitimate takes longer.
REQUEST_DEADLINE = 2.0
MAX_HEAD_BYTES = 8192  # probes and scrapers send a few hundred bytes
MAX_CONNECTIONS = 64
_TEXT = "text/plain; charset=utf-8"


class _Client:
    """One connection: what it sent so far, what we still owe it, when it must be done."""

    __slots__ = ("deadline", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline
        self.inbox = bytearray()
        self.outbox = b""


def _response(
    status: HTTPStatus, body: bytes, content_type: str = _TEXT, *, head: bool = False
) -> bytes:
    allow = "Allow: GET, HEAD\r\n" if status is HTTPStatus.METHOD_NOT_ALLOWED else ""
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
        f"{allow}\r\n"
    ).encode() + (b"" if head else body)


def answer(head: bytes, *, state: HealthState, metrics: Metrics) -> bytes:
    """The whole reply to one request head (request line and headers, without the blank line)."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):  # noqa: PLR2004 - method, target, version
        return _response(HTTPStatus.BAD_REQUEST, b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in {b"GET", b"HEAD"}:
        return _response(HTTPStatus.METHOD_NOT_ALLOWED, b"")
    head_only = method == b"HEAD"
    if target == b"/metrics":
        body = generate_latest(metrics.registry)
        return _response(HTTPStatus.OK, body, CONTENT_TYPE_LATEST, head=head_only)
    if target == b"/healthz":
        stuck = state.stuck()
        ok = not stuck
        silent = ", ".join(f"{worker} silent {s:.0f}s" for worker, s in sorted(stuck.items()))
        text = "ok\n" if ok else f"stuck: {silent}\n"
    elif target == b"/readyz":
        ok = state.ready
        text = "ok\n" if ok else "no page written yet, or the last write failed\n"
    else:
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", head=head_only)
    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
    return _response(status, text.encode(), head=head_only)


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # one socket for both families: "::" answers IPv4 too
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        # The kernel's bound (4096 here), as Go's net.Listen takes it: with the queue full a
        # SYN is dropped and a probe waits out its 1 s timeout for the retransmit. Churn
        # beside a CPU hog lost the first probe in 1 of 6 runs with 128, in 0 of 6 with this.
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)  # noqa: FBT003 - the socket API
    except OSError:
        sock.close()
        raise
    return sock


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
        """Bind now (a busy port fails at start); serve once started."""
        self._state, self._metrics, self._deadline = state, metrics, request_deadline
        try:
            self._listener = _listener(host, port)
        except OSError as exc:  # "::" on a host without IPv6: answer on IPv4 instead
            if host != "::" or exc.errno not in {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}:
                raise
            self._listener = _listener("0.0.0.0", port)  # noqa: S104
        self._clients: dict[socket.socket, _Client] = {}  # oldest first
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="health", daemon=True)

    @property
    def active_connections(self) -> int:
        """Connections open now (at most MAX_CONNECTIONS)."""
        return len(self._clients)

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
        for client in list(self._clients.values()):
            self._close(client)
        self._selector.close()
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _serve(self) -> None:
        # No polling: the selector sleeps until a socket is ready, the nearest deadline
        # passes, or stop() writes to the pipe. An idle sidecar does not wake at all.
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        while True:
            timeout = None
            if self._clients:
                nearest = min(c.deadline for c in self._clients.values())
                timeout = max(0.0, nearest - time.monotonic())
            for key, events in self._selector.select(timeout):
                if key.fileobj == self._wake_read:
                    return
                if key.fileobj is self._listener:
                    self._accept()
                elif isinstance(key.data, _Client):
                    self._ready(key.data, events)
            now = time.monotonic()
            for client in [c for c in self._clients.values() if c.deadline <= now]:
                self._close(client)

    def _accept(self) -> None:
        for _ in range(MAX_CONNECTIONS):  # in batches: a flood cannot starve the open ones
            try:
                sock, _address = self._listener.accept()
            except OSError:
                return  # none left, out of descriptors, an aborted handshake: next wake
            if len(self._clients) >= MAX_CONNECTIONS:
                self._make_room()
            sock.setblocking(False)  # noqa: FBT003 - the socket API
            client = _Client(sock, time.monotonic() + self._deadline)
            self._clients[sock] = client
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _make_room(self) -> None:
        """Answer every client whose request is here, then drop the oldest still waiting."""
        for key, events in self._selector.select(0):
            if isinstance(key.data, _Client):
                self._ready(key.data, events)
        if len(self._clients) >= MAX_CONNECTIONS:
            self._close(next(iter(self._clients.values())))

    def _ready(self, client: _Client, events: int) -> None:
        try:
            if events & selectors.EVENT_READ and not client.outbox:
                self._read(client)
            if events & selectors.EVENT_WRITE and client.outbox:
                self._write(client)
        except OSError:  # a client that hangs up or resets: its business, nothing logged
            self._close(client)

    def _read(self, client: _Client) -> None:
        data = client.sock.recv(4096)
        if not data:
            self._close(client)
            return
        client.inbox += data
        end = client.inbox.find(b"\r\n\r\n")
        if end < 0 and len(client.inbox) <= MAX_HEAD_BYTES:
            return  # more to come, within the deadline
        if end < 0 or end > MAX_HEAD_BYTES:
            client.outbox = _response(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request head too large\n"
            )
        else:
            client.outbox = answer(
                bytes(client.inbox[:end]), state=self._state, metrics=self._metrics
            )
        client.inbox = bytearray()  # nothing more is read from this client
        self._selector.modify(client.sock, selectors.EVENT_WRITE, client)
        self._write(client)

    def _write(self, client: _Client) -> None:
        client.outbox = client.outbox[client.sock.send(client.outbox) :]
        if not client.outbox:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_WR)
            self._close(client)

    def _close(self, client: _Client) -> None:
        if self._clients.pop(client.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(client.sock)
        client.sock.close()
