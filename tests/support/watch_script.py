"""The real watch loop in-process: a scripted list/watch source, a stop event that does not
sleep, and a fake clock, so a test drives ``Reflector`` through any sequence of lists,
watch lines and failures in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any

from sidecar.api.errors import ApiError, from_transport
from sidecar.api.policy import Streak
from sidecar.api.reflector import Reflector
from sidecar.backoff import Backoff
from sidecar.health.state import HealthState
from sidecar.metrics import ErrorKind, Metrics, Source
from sidecar.page.membership import SliceView, Snapshot, parse_as
from support.clock import FakeClock

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator


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


def as_api_error(exc: BaseException) -> ApiError:
    """What the real source raises for exc: ApiErrors as they are, transport errors typed."""
    return exc if isinstance(exc, ApiError) else from_transport(exc)


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
        self.reloads = 0

    def _next(self) -> Any:
        """The next step (an exception step is recorded as a call too, and returned)."""
        if not self._steps:
            self._stop.set()
            return ApiError(ErrorKind.CONNECTION, "script used up")
        step = self._steps.pop(0)
        if isinstance(step, BaseException):
            self.calls.append(("raised", Source.ENDPOINT_SLICES, type(step).__name__))
        return step

    def list(self, api: Source) -> Iterator[tuple[list[SliceView], str]]:
        """The next step: a list's objects and resourceVersion, as one page."""
        step = self._next()
        if isinstance(step, BaseException):
            raise as_api_error(step)
        self.calls.append(("list", api, None))
        objects, version = step
        yield [parse_as(api)(obj) for obj in objects], version

    @contextlib.contextmanager
    def watch(self, api: Source, resource_version: str | None, timeout: int) -> Iterator[Any]:
        """The next step: the watch's lines; the clock moves watch_seconds past its start.

        An ApiError step is the answer to the request (an HTTP status); any other exception
        (a reset, a read timeout) comes from the stream, after the watch was accepted.
        """
        assert timeout > 0
        step = self._next()
        if isinstance(step, ApiError):
            raise step
        self.calls.append(("watch", api, resource_version))
        self._clock.now += self.watch_seconds
        yield self._stream(step)

    @staticmethod
    def _stream(step: Any) -> Iterator[bytes]:
        if isinstance(step, BaseException):
            raise as_api_error(step)
        for line in step:
            yield json.dumps(line).encode() if isinstance(line, dict) else line

    def reload_credentials(self) -> None:
        """Counted: the loop reads the credentials again after a 401."""
        self.reloads += 1

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
        self.watcher = Reflector(
            source=self.source,
            sink=self,
            streak=Streak(
                metrics=self.metrics,
                backoff=Backoff(),
                host="https://api.test",
                namespace="default",
            ),
            watch_timeout=60,
            health=HealthState(stuck_after=60, metrics=self.metrics, clock=self.clock),
            metrics=self.metrics,
            stop_event=self.stop,
            clock=self.clock,
        )

    @property
    def unauthorized(self) -> int:
        """How often the loop read the credentials again."""
        return self.source.reloads

    def submit(self, snapshot: Snapshot) -> None:
        """Recorded (the loop's sink)."""
        self.snapshots.append(snapshot)

    def set_stale(self, since: dt.datetime | None) -> None:
        """Recorded when it changes, as the publisher takes it (the loop's sink)."""
        if (self.stale[-1] if self.stale else None) != since:
            self.stale.append(since)

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
