"""A clock for the code that takes one: monotonic seconds that move only when told."""

from __future__ import annotations


class FakeClock:
    """Call it for the time; set ``now`` or ``advance`` to move it."""

    def __init__(self, start: float = 0.0) -> None:
        """Start at start."""
        self.now = start

    def __call__(self) -> float:
        """The current time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds
