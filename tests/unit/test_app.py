"""The worker threads of the sidecar: a dead worker stops the process instead of hiding."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import structlog

from sidecar.app import _serve
from sidecar.config import ExitCode

if TYPE_CHECKING:
    from collections.abc import Callable


def never(stop: threading.Event) -> Callable[[], None]:
    """A stopper that records being called by setting nothing (the event is set already)."""
    return lambda: None if stop.is_set() else stop.set()


def test_a_worker_that_raises_stops_the_process_and_is_named() -> None:
    """A worker raising before stop is set sets the stop event, is logged and named, and the
    process exits 1.
    """
    stop = threading.Event()

    def broken() -> None:
        raise RuntimeError("bug")

    with structlog.testing.capture_logs() as logs:
        code = _serve(stop, {"watch": (broken, never(stop))})
    assert code == ExitCode.FAILURE
    assert [line["workers"] for line in logs if line["event"] == "worker_died"] == [["watch"]]
    assert [line["worker"] for line in logs if line["event"] == "worker_crashed"] == ["watch"]


def test_a_worker_that_returns_early_also_stops_the_process() -> None:
    """A worker returning although nobody asked it to stop counts as died as well."""
    stop = threading.Event()
    assert _serve(stop, {"publish": (lambda: None, never(stop))}) == ExitCode.FAILURE


def test_workers_that_end_after_stop_are_not_counted_as_died() -> None:
    """Workers that return because stop was set are an orderly exit, not a failure; each
    worker's stopper is called.
    """
    stop = threading.Event()
    stopped: list[str] = []

    def until_stopped() -> None:
        stop.wait(timeout=5)

    def stopper(name: str) -> Callable[[], None]:
        return lambda: stopped.append(name)

    workers = {
        "publish": (stop.set, stopper("publish")),
        "watch": (until_stopped, stopper("watch")),
    }
    assert _serve(stop, workers) == ExitCode.OK
    assert stopped == ["publish", "watch"]
