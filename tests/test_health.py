"""Health: live unless a worker is stuck, ready from pages, served over HTTP within bounds."""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from polling import wait_until
from sidecar.health import MAX_CONNECTIONS, HealthServer, HealthState
from sidecar.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Iterator


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_that_stops_beating_is_stuck() -> None:
    """Live while every worker beats within stuck_after; a silent worker makes it not live,
    and names itself; its next beat makes it live again.
    """
    clock = Clock()
    state = HealthState(stuck_after=10, clock=clock)
    state.beat("watch")
    state.beat("publish")
    seen = [state.live]
    clock.now += 6
    state.beat("publish")
    clock.now += 5
    seen.append(state.live)
    assert state.stuck() == {"watch": 11}
    state.beat("watch")
    seen.append(state.live)
    assert seen == [True, False, True]


def test_a_worker_waiting_for_news_is_not_stuck() -> None:
    """A worker blocked waiting for work with no bound (nothing changes) stays live forever."""
    clock = Clock()
    state = HealthState(stuck_after=10, clock=clock)
    state.beat("publish")
    state.waiting("publish")
    clock.now += 3600
    assert state.live


def test_ready_needs_a_page_and_a_working_folder() -> None:
    """Not ready before the first page; not ready while writes fail; ready again after; the
    podlister_ready gauge follows every change.
    """
    metrics = Metrics()
    state = HealthState(stuck_after=10, metrics=metrics)
    seen = [(state.ready, metrics.ready._value.get())]
    for step in (state.write_succeeded, state.write_failed, state.write_succeeded):
        step()
        seen.append((state.ready, metrics.ready._value.get()))
    assert seen == [(False, 0), (True, 1), (False, 0), (True, 1)]


def test_a_restored_page_is_ready_at_once() -> None:
    """A page an earlier run left for this Service makes the sidecar ready before any list."""
    state = HealthState(stuck_after=10)
    state.page_restored()
    assert state.ready


def status(url: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def serving(state: HealthState, host: str = "127.0.0.1") -> Iterator[HealthServer]:
    server = HealthServer(host=host, port=0, state=state, metrics=Metrics())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_http_endpoints() -> None:
    """/healthz, /readyz and /metrics answer over real HTTP with the state's verdicts."""
    clock = Clock()
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
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def active_is(server: HealthServer, count: int) -> bool:
    return server.active_connections == count


def test_connections_over_the_cap_are_closed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With MAX_CONNECTIONS half-sent requests held open, further connections are closed at
    once instead of each getting a thread; once the holders leave, probes are answered again.
    """
    monkeypatch.setattr("sidecar.health._Handler.timeout", 30)
    with serving(HealthState(stuck_after=10)) as server:
        host, port = server.address
        held = []
        try:
            for _ in range(MAX_CONNECTIONS):
                held.append(half_sent(host, port))
                wait_until(functools.partial(active_is, server, len(held)), timeout=5, what="held")
            extra = [half_sent(host, port) for _ in range(10)]
            held.extend(extra)
            assert all(closed_by_server(sock) for sock in extra)
            assert server.active_connections == MAX_CONNECTIONS
        finally:
            for sock in held:
                sock.close()
        base = f"http://{host}:{port}"
        wait_until(lambda: status(base + "/healthz") == 200, timeout=10, what="a probe answered")


def test_a_half_sent_request_is_dropped_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that never finishes its request is disconnected after the request timeout."""
    monkeypatch.setattr("sidecar.health._Handler.timeout", 0.5)
    with serving(HealthState(stuck_after=10)) as server:
        sock = half_sent(*server.address)
        with sock:
            assert closed_by_server(sock)
        wait_until(lambda: server.active_connections == 0, timeout=5, what="slot released")


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
