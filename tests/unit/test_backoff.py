"""Backoff: 0.8 s doubling to 30 s with jitter, Retry-After honoured, reset after quiet."""

from __future__ import annotations

import random

from sidecar.backoff import Backoff
from support.clock import FakeClock


def test_doubles_to_the_cap_with_bounded_jitter() -> None:
    """Delays double from 0.8 s, never exceed 30 s, and jitter adds at most 25 %."""
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=random.Random(1))
    delays = []
    for _ in range(10):
        delays.append(backoff.failure())
        clock.now += 1
    bases = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30, 30, 30]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= min(30, base * 1.25)


def test_jitter_spreads_delays() -> None:
    """Two clients with different randomness do not retry in lockstep."""
    first = Backoff(rng=random.Random(1)).failure()
    second = Backoff(rng=random.Random(2)).failure()
    assert first != second


def test_retry_after_is_a_floor_but_capped() -> None:
    """Retry-After raises the delay, but never beyond the cap."""
    assert Backoff(rng=random.Random(1)).failure(at_least=7) >= 7
    assert Backoff(rng=random.Random(1)).failure(at_least=3600) == 30


def test_resets_after_a_quiet_period() -> None:
    """A failure more than a minute after the previous one starts again at 0.8 s."""
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=random.Random(1))
    for _ in range(6):
        backoff.failure()
    clock.now += 61
    assert backoff.failure() <= 1.0
