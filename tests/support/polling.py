"""Bounded polling: every wait in the tests ends, and says what it waited for when it fails."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold within the bound."""


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.01,
    what: str = "condition",
) -> T:
    """Call probe until it returns something truthy; return that, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    last_error: Exception | None = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = (
                f"; last value {last!r}" if last_error is None else f"; last error {last_error!r}"
            )
            raise WaitTimeout(f"{what} not reached within {timeout}s{detail}")
        time.sleep(interval)
