"""Health from real progress: live while no worker is stuck, ready while a page is served."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.metrics import Metrics


class HealthState:
    """What the probes report, updated by the workers and the publisher.

    Live: no worker is stuck, i.e. silent for ``stuck_after`` while not waiting for news (an
    unreachable API is not stuck: the watch beats at every retry; a restart would not help).
    Ready: a page exists (written, or left by an earlier run) and the last write succeeded.
    """

    def __init__(
        self,
        *,
        stuck_after: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start live (nothing has had time to get stuck) and not ready."""
        self._stuck_after = stuck_after
        self._metrics = metrics
        self._clock = clock
        self._beats: dict[str, float | None] = {}
        self._page = False
        self._last_write_ok = False
        self._lock = threading.Lock()
        self._set_ready_gauge()

    def beat(self, worker: str) -> None:
        """The worker is making progress."""
        self._beats[worker] = self._clock()

    def waiting(self, worker: str) -> None:
        """The worker is blocked waiting for news that may take forever: not stuck."""
        self._beats[worker] = None

    def page_restored(self) -> None:
        """An earlier run's page for this Service is in the folder and can be served."""
        with self._lock:
            self._page = self._last_write_ok = True
        self._set_ready_gauge()

    def write_succeeded(self) -> None:
        """A full set of pages is on disk."""
        with self._lock:
            self._page = self._last_write_ok = True
        self._set_ready_gauge()

    def write_failed(self) -> None:
        """The output folder refused a write; the old pages stay but are going stale."""
        with self._lock:
            self._last_write_ok = False
        self._set_ready_gauge()

    def stuck(self) -> dict[str, float]:
        """Workers that have not beaten for longer than stuck_after, with the seconds since."""
        now = self._clock()
        silent = {worker: now - at for worker, at in list(self._beats.items()) if at is not None}
        return {worker: s for worker, s in silent.items() if s > self._stuck_after}

    @property
    def live(self) -> bool:
        """True while no worker is stuck."""
        return not self.stuck()

    @property
    def ready(self) -> bool:
        """True once a page exists and the output folder still takes writes."""
        return self._page and self._last_write_ok

    def _set_ready_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.ready.set(1 if self.ready else 0)
