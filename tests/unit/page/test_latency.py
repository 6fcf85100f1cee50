"""The programming latency's bookkeeping: which trigger times are new, and what they measure."""

from __future__ import annotations

from sidecar.page.latency import TriggerTimes
from sidecar.page.membership import SliceView

STARTED = 1_000.0


def view(name: str, changed_at: float | None) -> SliceView:
    return SliceView(name=name, endpoints=(), changed_at=changed_at)


def test_only_triggers_after_the_start_are_fresh() -> None:
    """A trigger older than the sidecar's start (what the first list brings) measures the
    start, not a change, and is left out, as kube-proxy leaves it out; an unstamped slice too.
    """
    times = TriggerTimes(started=STARTED)
    views = [view("a", STARTED - 5), view("b", STARTED + 1), view("c", None)]
    assert times.fresh(views) == {"b": STARTED + 1}


def test_a_trigger_is_measured_once_and_a_new_one_again() -> None:
    """Once measured, a slice's trigger is not fresh again; its next trigger is."""
    times = TriggerTimes(started=STARTED)
    first = [view("a", STARTED + 1)]
    assert times.measure(first, times.fresh(first), now=STARTED + 1.25) == [0.25]
    assert times.fresh(first) == {}
    second = [view("a", STARTED + 7)]
    assert times.measure(second, times.fresh(second), now=STARTED + 9) == [2.0]


def test_a_clock_behind_the_controllers_measures_zero() -> None:
    """A trigger later than the sidecar's clock (the nodes' clocks disagree) counts as 0 s."""
    times = TriggerTimes(started=STARTED)
    views = [view("a", STARTED + 10)]
    assert times.measure(views, times.fresh(views), now=STARTED + 9) == [0.0]


def test_a_deleted_slice_is_forgotten() -> None:
    """Only the slices still there are remembered, so the record never outgrows the Service;
    a slice that comes back with the same trigger is measured again.
    """
    times = TriggerTimes(started=STARTED)
    views = [view("a", STARTED + 1), view("b", STARTED + 2)]
    times.measure(views, times.fresh(views), now=STARTED + 3)
    times.measure(views[1:], {}, now=STARTED + 4)
    assert times.fresh(views) == {"a": STARTED + 1}
