"""The worker threads of the sidecar: a dead worker stops the process instead of hiding."""

from __future__ import annotations

import threading
import time

from sidecar.app import Workers


def test_a_worker_that_raises_stops_the_process_and_is_named() -> None:
    """A worker raising before stop is set sets the stop event and is recorded as died."""
    stop = threading.Event()
    workers = Workers(stop)

    def broken() -> None:
        raise RuntimeError("bug")

    workers.start("watch", broken)
    assert stop.wait(timeout=5), "a dying worker must set the stop event"
    workers.join(deadline=time.monotonic() + 5)
    assert workers.died == ["watch"]


def test_a_worker_that_returns_early_also_stops_the_process() -> None:
    """A worker returning although nobody asked it to stop counts as died as well."""
    stop = threading.Event()
    workers = Workers(stop)
    workers.start("publish", lambda: None)
    assert stop.wait(timeout=5)
    workers.join(deadline=time.monotonic() + 5)
    assert workers.died == ["publish"]


def test_workers_that_end_after_stop_are_not_counted_as_died() -> None:
    """Workers that return because stop was set are an orderly exit, not a failure."""
    stop = threading.Event()
    workers = Workers(stop)

    def until_stopped() -> None:
        stop.wait(timeout=5)

    for name in ("publish", "watch"):
        workers.start(name, until_stopped)
    stop.set()
    workers.join(deadline=time.monotonic() + 5)
    assert workers.died == []
