"""The page's programming latency: from the change a pod triggered to the page that shows it.

Measured as kube-proxy measures its ``kubeproxy_network_programming_duration_seconds``
(pkg/proxy/endpointschangetracker.go): from each slice's trigger time (``SliceView.
changed_at``), counting only triggers later than the sidecar's start (an older one measures
the start, not a change), once per trigger of each slice. The trigger is the pod's Ready
condition time, in whole seconds: a figure is up to 1 s longer than the truth, and as exact
as the clocks of the controller's node and the sidecar's agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sidecar.page.membership import SliceView


class TriggerTimes:
    """Which slices' trigger times have been measured already."""

    def __init__(self, started: float) -> None:
        """Count only triggers after ``started`` (Unix time)."""
        self._started = started
        self._measured: dict[str, float] = {}

    def fresh(self, views: Iterable[SliceView]) -> dict[str, float]:
        """The trigger times not measured yet, by slice name."""
        return {
            view.name: view.changed_at
            for view in views
            if view.changed_at is not None
            and view.changed_at > self._started
            and self._measured.get(view.name) != view.changed_at
        }

    def measure(
        self, views: Iterable[SliceView], fresh: Mapping[str, float], now: float
    ) -> list[float]:
        """Mark fresh as measured at ``now``: their latencies (kept: the slices in views)."""
        names = {view.name for view in views}
        self._measured = {
            name: at for name, at in {**self._measured, **fresh}.items() if name in names
        }
        return [max(0.0, now - at) for at in fresh.values()]
