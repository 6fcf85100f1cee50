"""Capped, jittered exponential backoff that forgets old failures (client-go's model)."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


DEFAULT_CAP = 30.0


class Backoff:
    """Delays of initial, 2xinitial, … up to cap, each stretched by up to ``jitter``.

    A failure after ``reset_after`` seconds without one starts again from ``initial``,
    so a connection that drops once a day does not wait 30 s.
    """

    def __init__(  # noqa: PLR0913 - keyword-only tuning knobs
        self,
        *,
        initial: float = 0.8,
        cap: float = DEFAULT_CAP,
        jitter: float = 0.25,
        reset_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """Configure the sequence; clock and rng are injectable for tests."""
        self._initial, self._cap, self._jitter = initial, cap, jitter
        self._reset_after = reset_after
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._attempt = 0
        self._last_failure: float | None = None

    def failure(self, *, at_least: float = 0.0) -> float:
        """Record a failure and return how long to wait; ``at_least`` honours Retry-After."""
        now = self._clock()
        if self._last_failure is not None and now - self._last_failure > self._reset_after:
            self._attempt = 0
        self._last_failure = now
        base = min(self._cap, self._initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        delay = min(self._cap, base * (1 + self._jitter * self._rng.random()))
        return float(max(delay, min(at_least, self._cap)))

    def reset(self) -> None:
        """Forget the streak: the next failure waits ``initial`` again."""
        self._attempt = 0
        self._last_failure = None
