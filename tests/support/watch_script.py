"""The real watch loop in-process: a scripted list/watch source, a stop event that does not
sleep, and a fake clock, so a test drives ``EndpointWatcher`` through any sequence of
lists, watch lines and failures in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any

from sidecar.backoff import Backoff
from sidecar.failures import FailureTracker
from sidecar.health import HealthState
from sidecar.kinds import Source
from sidecar.membership import SliceView, Snapshot, parse_as
from sidecar.metrics import Metrics
from sidecar.watch import EndpointWatcher
from support.clock import FakeClock

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterator


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded (the backoff delays)."""

    def __init__(self) -> None:
        """Not set; no waits yet."""
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        """Record the wait instead of waiting."""
        self.waits.append(timeout or 0.0)
        return self.is_set()


class ScriptedSource:
    """Answers each list and watch with the next step of a script; stops the loop when the
    script is used up. A step is an exception to raise, a (objects, resourceVersion) pair for
    a list, or a list of lines (dicts are sent as JSON) for a watch.
    """

    def __init__(self, steps: list[Any], stop: threading.Event, clock: FakeClock) -> None:
        """Keep the script; record every call."""
        self._steps, self._stop, self._clock = list(steps), stop, clock
        self.calls: list[tuple[str, Source, str | None]] = []
        self.watch_seconds = 1.0  # how long each watch lasts on the fake clock

    def _next(self) -> Any:
        """The next step (an exception step is raised, and recorded as a call too)."""
        if not self._steps:
            self._stop.set()
            raise OSError("script used up")
        step = self._steps.pop(0)
        if isinstance(step, BaseException):
            self.calls.append(("raised", Source.ENDPOINT_SLICES, type(step).__name__))
            raise step
        return step

    def list(self, api: Source, stopping: Callable[[], bool]) -> tuple[list[SliceView], str]:
        """The next step: a list's objects and resourceVersion."""
        assert not stopping()
        step = self._next()
        self.calls.append(("list", api, None))
        objects, version = step
        return [parse_as(api)(obj) for obj in objects], version

    @contextlib.contextmanager
    def watch(self, api: Source, resource_version: str | None, timeout: int) -> Iterator[Any]:
        """The next step: the watch's lines; the clock moves watch_seconds past its start."""
        assert timeout > 0
        lines = self._next()
        self.calls.append(("watch", api, resource_version))
        self._clock.now += self.watch_seconds
        yield (json.dumps(line).encode() if isinstance(line, dict) else line for line in lines)

    def interrupt(self) -> None:
        """Nothing blocks here."""


class Run:
    """One in-process run of the real loop over a script: what it published and reported."""

    def __init__(self, steps: list[Any]) -> None:
        """Run the loop over steps until the script is used up."""
        self.stop = RecordingStop()
        self.clock = FakeClock(1000.0)
        self.source = ScriptedSource(steps, self.stop, self.clock)
        self.metrics = Metrics()
        self.snapshots: list[Snapshot] = []
        self.stale: list[dt.datetime | None] = []
        self.unauthorized = 0
        self.watcher = EndpointWatcher(
            source=self.source,
            failures=FailureTracker(
                metrics=self.metrics,
                backoff=Backoff(),
                host="https://api.test",
                namespace="default",
                on_stale=self.stale.append,
                on_unauthorized=self._unauthorized,
            ),
            watch_timeout=60,
            idle_timeout=30,
            on_change=self.snapshots.append,
            health=HealthState(stuck_after=60, metrics=self.metrics, clock=self.clock),
            metrics=self.metrics,
            stop_event=self.stop,
            clock=self.clock,
        )

    def _unauthorized(self) -> None:
        self.unauthorized += 1

    def go(self) -> Run:
        """Run until the script is used up (the loop then sees its stop event)."""
        self.watcher.run()
        return self

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value (0 if absent)."""
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0

    def addresses(self, index: int = -1) -> list[str]:
        """The ready addresses of one published snapshot, in the slices' order."""
        snapshot = self.snapshots[index]
        return [e.member.address for view in snapshot.views for e in view.endpoints if e.ready]
