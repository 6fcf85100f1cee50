"""The sidecar's own work per change, in-process: ``tox -e bench-pipeline``.

One endpoint of slice 0 flips readiness; timed from the slice's JSON to the three files'
bytes: parse the slice, the membership over all slices, the page's history of 20 changes,
and the render with the pieces kept from the last render. No HTTP and no disk: what is left
when the network and the file system are taken away, so that a change to this path shows
above the machine's noise. Median and p99
of n changes per size, CPU time of this thread and wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

from bench.stats import percentile
from kubestub import endpoint, endpoint_slice
from sidecar.page.document import PageData
from sidecar.page.fragments import Kept, member_json
from sidecar.page.history import Change
from sidecar.page.membership import membership, slice_view
from sidecar.page.render import PackagedPage, render_files


def slices(total: int, flipped: int | None) -> list[dict[str, object]]:
    """Total endpoints, 100 per slice; endpoint ``flipped`` of slice 0 not ready."""
    out = []
    for s in range((total + 99) // 100):
        count = min(100, total - s * 100)
        eps = [
            endpoint(
                f"10.{s // 250}.{s % 250}.{i + 1}",
                ready=not (s == 0 and i == flipped),
                pod=f"web-{s}-{i}",
                node=f"node-{i % 3}",
            )
            for i in range(count)
        ]
        out.append(endpoint_slice(f"web-{s}", service="web", endpoints=eps))
    return out


def history(now: dt.datetime) -> tuple[Change, ...]:
    """A full history: 20 changes of one pod each."""
    return tuple(
        Change(
            at=now - dt.timedelta(seconds=i),
            added=(f"10.0.0.{i + 1}",) if i % 2 else (),
            removed=() if i % 2 else (f"10.0.0.{i + 1}",),
            added_count=i % 2,
            removed_count=1 - i % 2,
        )
        for i in range(20)
    )


def measure(total: int, changes: int) -> tuple[list[float], list[float]]:
    """CPU and wall milliseconds of each change at total endpoints."""
    template, pieces = PackagedPage(), Kept(member_json)
    views = {}
    for obj in slices(total, None):
        view = slice_view(json.loads(json.dumps(obj)))
        views[view.name] = view
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    past = history(now)
    variants = [json.dumps(slices(min(total, 100), flipped)[0]).encode() for flipped in (None, 7)]
    cpu, wall = [], []
    for step in range(changes + 5):
        raw = variants[step % 2]
        started_cpu, started = time.thread_time(), time.perf_counter()
        obj = json.loads(raw)
        view = slice_view(obj)
        views[view.name] = view
        data = PageData(
            service="web",
            namespace="default",
            membership=membership(views.values()),
            generated_at=now,
            pod_name="web-0-0",
            pod_ip="10.0.0.1",
            changes=past,
        )
        render_files(data, template, pieces)
        if step >= 5:  # the first renders fill the caches
            cpu.append((time.thread_time() - started_cpu) * 1000)
            wall.append((time.perf_counter() - started) * 1000)
    return cpu, wall


def main() -> int:
    """Print median and p99 per size."""
    parser = argparse.ArgumentParser(prog="tox -e bench-pipeline --", description=__doc__)
    parser.add_argument("--changes", type=int, default=200, help="changes per size")
    parser.add_argument("--sizes", default="10,1000,10000", help="endpoint counts")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; per change, ms (n={args.changes})")
    for total in (int(size) for size in args.sizes.split(",")):
        cpu, wall = measure(total, args.changes)
        print(
            f"{total:>6} endpoints  cpu p50 {percentile(cpu, 0.5):7.3f}"
            f"  p99 {percentile(cpu, 0.99):7.3f}"
            f"  wall p50 {percentile(wall, 0.5):7.3f}  p99 {percentile(wall, 0.99):7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
