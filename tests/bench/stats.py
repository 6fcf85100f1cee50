"""Percentiles for the benchmark reports."""

from __future__ import annotations

import statistics


def summary(samples: list[float], unit: float = 1000.0) -> str:
    """'p50 X  p99 Y  max Z (n)' in milliseconds by default."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * unit:8.2f}  p99 {p99 * unit:8.2f}  "
        f"max {ordered[-1] * unit:8.2f}  (n={len(ordered)})"
    )


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at that fraction of the sorted samples (nearest rank), as summary() picks it."""
    ordered = sorted(samples)
    if fraction == 0.5:
        return statistics.median(ordered)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
