"""The probe server over real sockets: verdicts served within bounds whatever clients do."""

from __future__ import annotations

import contextlib
import functools
import http.client
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from sidecar.health.server import MAX_CONNECTIONS, MAX_HEAD_BYTES, REQUEST_DEADLINE, HealthServer
from sidecar.health.state import HealthState
from sidecar.metrics import Metrics
from support.clock import FakeClock
from support.http import status
from support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def serving(
    state: HealthState, host: str = "127.0.0.1", *, request_deadline: float = REQUEST_DEADLINE
) -> Iterator[HealthServer]:
    server = HealthServer(
        host=host, port=0, state=state, metrics=Metrics(), request_deadline=request_deadline
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_http_endpoints() -> None:
    """/healthz, /readyz and /metrics answer over real HTTP with the state's verdicts."""
    clock = FakeClock(100.0)
    state = HealthState(stuck_after=10, clock=clock)
    with serving(state) as server:
        base = "http://{}:{}".format(*server.address)
        state.beat("watch")
        assert status(base + "/healthz") == 200
        assert status(base + "/readyz") == 503
        state.write_succeeded()
        assert status(base + "/readyz") == 200
        clock.now += 60
        assert status(base + "/healthz") == 503
        assert status(base + "/nope") == 404
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        assert "podlister_event_to_write_seconds_bucket" in text


def test_only_get_and_head() -> None:
    """HEAD answers like GET without a body; POST and other methods get 405 with Allow."""
    with serving(HealthState(stuck_after=10)) as server:
        host, port = server.address
        connection = http.client.HTTPConnection(host, port, timeout=5)
        connection.request("HEAD", "/healthz")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"")
        connection.close()
        connection = http.client.HTTPConnection(host, port, timeout=5)
        connection.request("POST", "/healthz", body=b"x")
        response = connection.getresponse()
        assert response.status == 405
        assert response.getheader("Allow") == "GET, HEAD"
        connection.close()


def half_sent(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (waits at most the socket's timeout)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True


def exchange(host: str, port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send request and end the sending side, then read until the server closes; everything
    it sent.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def test_a_probe_always_gets_a_slot() -> None:
    """With every slot held by clients that never finish, a new probe still connects and is
    answered at once: the oldest holder is dropped to make room.
    """
    with serving(HealthState(stuck_after=10), request_deadline=30) as server:
        host, port = server.address
        held: list[socket.socket] = []
        try:
            held.extend(half_sent(host, port) for _ in range(MAX_CONNECTIONS))
            wait_until(
                functools.partial(active_is, server, MAX_CONNECTIONS), timeout=5, what="held"
            )
            base = f"http://{host}:{port}"
            answers = [status(base + "/healthz") for _ in range(20)]
            assert answers == [200] * 20
            assert server.active_connections <= MAX_CONNECTIONS
            assert closed_by_server(held[0])
        finally:
            for sock in held:
                sock.close()


def active_is(server: HealthServer, count: int) -> bool:
    return server.active_connections == count


def test_the_deadline_is_for_the_whole_request() -> None:
    """A client that sends one byte at a time, never pausing long, is still cut off once the
    request deadline has passed since it connected (a timeout per read would never fire).
    """
    with serving(HealthState(stuck_after=10), request_deadline=0.5) as server:
        sock = socket.create_connection(server.address, timeout=5)
        with sock:
            connected = time.monotonic()
            dripped = 0
            with contextlib.suppress(OSError):
                for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                    sock.send(bytes([byte]))
                    dripped += 1
                    # The next byte once the server has had the last one (its receive queue
                    # is empty), a few milliseconds apart: never idle as long as the deadline.
                    time.sleep(0.02)
            closed_after = time.monotonic() - connected
            assert closed_by_server(sock)
        assert dripped < 121, "the server must cut the drip off before it ends"
        assert closed_after < 5
        wait_until(lambda: server.active_connections == 0, timeout=5, what="slot released")


def test_a_half_sent_request_is_dropped_after_the_deadline() -> None:
    """A client that never finishes its request is disconnected after the request deadline."""
    with serving(HealthState(stuck_after=10), request_deadline=0.5) as server:
        sock = half_sent(*server.address)
        with sock:
            assert closed_by_server(sock)
        wait_until(lambda: server.active_connections == 0, timeout=5, what="slot released")


def test_one_request_per_connection() -> None:
    """The reply says Connection: close and the server closes: no idle keep-alive holds a slot."""
    with serving(HealthState(stuck_after=10)) as server:
        reply = exchange(*server.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nConnection: close\r\n" in reply
        wait_until(lambda: server.active_connections == 0, timeout=5, what="closed")


def test_a_head_larger_than_the_bound_gets_431() -> None:
    """Headers past MAX_HEAD_BYTES (99 headers of 65 KB, say) get 431 and the connection is
    closed after at most one read past the bound: what a client sends is never all kept.
    """
    with serving(HealthState(stuck_after=10)) as server:
        huge = b"GET /healthz HTTP/1.1\r\n" + b"".join(
            b"X-Big-%d: " % i + b"a" * 65_000 + b"\r\n" for i in range(99)
        )
        reply = exchange(*server.address, huge + b"\r\n")
        assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        just_under = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_HEAD_BYTES - 100)
        assert exchange(*server.address, just_under + b"\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_fuzzed_requests_never_break_the_server() -> None:
    """2,000 seeded mutations of real probe requests (bytes flipped, cut, repeated, inserted):
    every one is answered with an HTTP status line or closed, and the server goes on answering
    probes; nothing is printed.
    """
    rng = random.Random(20261130)
    seeds = [
        b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:8081\r\nUser-Agent: kube-probe/1.37\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
        b"HEAD /readyz HTTP/1.0\r\n\r\n",
    ]
    with serving(HealthState(stuck_after=10), request_deadline=0.3) as server:
        base = "http://{}:{}".format(*server.address)
        kinds: dict[bytes, int] = {}
        for _ in range(2000):
            request = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                where = rng.randrange(len(request) or 1)
                action = rng.randrange(4)
                if action == 0 and request:
                    request[where] = rng.randrange(256)
                elif action == 1:
                    request = request[:where]
                elif action == 2:
                    request[where:where] = bytes(rng.randrange(256) for _ in range(8)) * 3
                else:
                    request[where:where] = request[where : where + 40] * rng.randint(2, 300)
            reply = exchange(*server.address, bytes(request), timeout=3)
            assert reply == b"" or reply.startswith(b"HTTP/1.1 "), reply[:80]
            kinds[reply[9:12]] = kinds.get(reply[9:12], 0) + 1
        assert status(base + "/healthz") == 200
        assert {b"200", b"400", b"405"} <= set(kinds), kinds


def test_dual_stack_default_answers_both_families() -> None:
    """Bound to "::", the server answers on IPv6 and on IPv4 (mapped) alike."""
    if not socket.has_ipv6:
        pytest.fail("this machine must have IPv6 on loopback for the dual-stack test")
    with serving(HealthState(stuck_after=10), host="::") as server:
        port = server.address[1]
        assert status(f"http://[::1]:{port}/healthz") == 200
        assert status(f"http://127.0.0.1:{port}/healthz") == 200


def test_a_client_that_hangs_up_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """A probe client that closes before the reply leaves no traceback on stdout or stderr."""
    with serving(HealthState(stuck_after=10)) as server:
        host, port = server.address
        for _ in range(20):
            sock = socket.create_connection((host, port), timeout=5)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.close()  # RST: the server's write fails with a reset or broken pipe
        base = f"http://{host}:{port}"
        assert status(base + "/healthz") == 200
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert "Exception" not in out + err


def test_stop_ends_the_server_thread_and_releases_the_port() -> None:
    """stop() wakes the serving loop at once: its thread ends and the port can be bound again."""
    server = HealthServer(
        host="127.0.0.1", port=0, state=HealthState(stuck_after=10), metrics=Metrics()
    )
    server.start()
    host, port = server.address
    assert status(f"http://{host}:{port}/healthz") == 200
    server.stop()
    assert not any(thread.name == "health" for thread in threading.enumerate())
    with socket.create_server((host, port)):
        pass
