"""Health: live unless a worker is stuck, ready while a page is served."""

from __future__ import annotations

from sidecar.health.state import HealthState
from sidecar.metrics import Metrics
from support.clock import FakeClock


def test_a_worker_that_stops_beating_is_stuck() -> None:
    """Live while every worker beats within stuck_after; a silent worker makes it not live,
    and names itself; its next beat makes it live again.
    """
    clock = FakeClock(100.0)
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
    clock = FakeClock(100.0)
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
