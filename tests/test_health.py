"""Health: live from watch progress, ready from written pages, served over HTTP."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

from sidecar.health import HealthServer, HealthState
from sidecar.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_until_progress_is_stale() -> None:
    """Live while the last progress is recent; not live after stale_after without any."""
    clock = Clock()
    state = HealthState(stale_after=10, clock=clock)
    seen = [state.live]
    clock.now += 10.5
    seen.append(state.live)
    state.progress()
    seen.append(state.live)
    assert seen == [True, False, True]


def test_ready_needs_a_page_and_a_working_folder() -> None:
    """Not ready before the first page; not ready while writes fail; ready again after."""
    state = HealthState(stale_after=10)
    seen = [state.ready]
    state.write_succeeded()
    seen.append(state.ready)
    state.write_failed()
    seen.append(state.ready)
    state.write_succeeded()
    seen.append(state.ready)
    assert seen == [False, True, False, True]


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_http_endpoints() -> None:
    """/healthz, /readyz and /metrics answer over real HTTP with the state's verdicts."""
    clock = Clock()
    state = HealthState(stale_after=10, clock=clock)
    metrics = Metrics()
    server = HealthServer(host="127.0.0.1", port=0, state=state, metrics=metrics)
    server.start()
    try:
        base = "http://{}:{}".format(*server.address)
        assert status(base + "/healthz") == 200
        assert status(base + "/readyz") == 503
        state.write_succeeded()
        assert status(base + "/readyz") == 200
        clock.now += 60
        assert status(base + "/healthz") == 503
        assert status(base + "/nope") == 404
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        assert "podlister_watch_healthy 0.0" in text
        assert "podlister_event_to_write_seconds_bucket" in text
    finally:
        server.stop()


def test_stop_ends_the_server_thread_and_releases_the_port() -> None:
    """stop() wakes the serving loop at once: its thread ends and the port can be bound again."""
    server = HealthServer(
        host="127.0.0.1", port=0, state=HealthState(stale_after=10), metrics=Metrics()
    )
    server.start()
    host, port = server.address
    assert status(f"http://{host}:{port}/healthz") == 200
    server.stop()
    assert not any(thread.name == "health" for thread in threading.enumerate())
    with socket.create_server((host, port)):
        pass
