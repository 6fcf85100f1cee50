"""The probe server's answers, from the request head to the bytes sent (no socket)."""

from __future__ import annotations

from sidecar.health.server import answer
from sidecar.health.state import HealthState
from sidecar.metrics import Metrics
from support.clock import FakeClock


def reply(head: bytes, state: HealthState) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """The status line, headers and body of the answer to head."""
    raw = answer(head, state=state, metrics=Metrics())
    top, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = top.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines)
    return status, headers, body


def test_healthz_names_the_stuck_worker() -> None:
    """/healthz is 200 while every worker beats, 503 naming the silent one otherwise."""
    clock = FakeClock(100.0)
    state = HealthState(stuck_after=10, clock=clock)
    state.beat("watch")
    assert reply(b"GET /healthz HTTP/1.1", state)[0] == b"HTTP/1.1 200 OK"
    clock.now += 30
    status, _, body = reply(b"GET /healthz?verbose HTTP/1.1", state)
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert body == b"stuck: watch silent 30s\n"


def test_readyz_follows_the_page() -> None:
    """/readyz is 503 before a page exists and 200 once one is written."""
    state = HealthState(stuck_after=10)
    assert reply(b"GET /readyz HTTP/1.0", state)[0].endswith(b"503 Service Unavailable")
    state.write_succeeded()
    assert reply(b"GET /readyz HTTP/1.0", state)[0].endswith(b"200 OK")


def test_every_answer_closes_and_is_not_cached() -> None:
    """One request per connection and nothing cached: every answer says so, HEAD has no body."""
    status, headers, body = reply(b"HEAD /metrics HTTP/1.1\r\nHost: x", HealthState(stuck_after=1))
    assert status.endswith(b"200 OK")
    assert headers[b"Connection"] == b"close"
    assert headers[b"Cache-Control"] == b"no-store"
    assert int(headers[b"Content-Length"]) > 0
    assert body == b""


def test_what_is_not_a_request_gets_400_404_or_405() -> None:
    """A request line that is not one gets 400, another path 404, another method 405."""
    state = HealthState(stuck_after=1)
    assert reply(b"GARBAGE", state)[0].endswith(b"400 Bad Request")
    assert reply(b"GET /nope HTTP/1.1", state)[0].endswith(b"404 Not Found")
    status, headers, _ = reply(b"DELETE /healthz HTTP/1.1", state)
    assert status.endswith(b"405 Method Not Allowed")
    assert headers[b"Allow"] == b"GET, HEAD"
