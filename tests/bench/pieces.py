"""What each of the sidecar's mechanisms buys, with and without it: ``tox -e bench-pieces``.

Each figure is one a user would notice in a pod, measured as a pod runs it (in-cluster
variables; run it with the image's Python for the image's figures):

- the client imported in part: the imports' peak RSS (against the container's 160 Mi) and
  wall time (against the startup probe), in fresh processes, in-cluster variables set;
- the pieces kept between renders (page/fragments.py): the CPU of one change's render at
  10,000 members, kept against built afresh;
- the heap trim after large pages (page/writer.py): RSS after 40 changes' pages at 10,000
  members, written with and without it (each in a fresh process).

Medians and ranges over --runs repeats, printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.pipeline import history, slices
from bench.sidecar import SHM

IN_A_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
IMPORTS = """
import json, resource, sys, time
started = time.perf_counter()
from sidecar.api.client_import import import_client_lightly
in_a_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"} if sys.argv[1] == "part" else {}
fallback = import_client_lightly(in_a_pod)
import sidecar.app
print(json.dumps({"ms": (time.perf_counter() - started) * 1000, "fallback": fallback,
    "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "modules": len(sys.modules)}))
"""
PAGES = """
import datetime as dt, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from bench.pipeline import history, slices
from bench.sidecar import SHM
from sidecar.metrics import Metrics
from sidecar.page import writer
from sidecar.page.document import PageData
from sidecar.page.membership import membership, slice_view
from sidecar.page.render import PackagedPage
if sys.argv[1] == "off":
    writer.TRIM_FROM_BYTES = 1 << 62
from support.procstat import rss_kib
import os
views = {view.name: view for view in (slice_view(o) for o in slices(10_000, None))}
now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
with tempfile.TemporaryDirectory(dir=sys.argv[2]) as folder:
    packaged = PackagedPage()
    page = writer.PageWriter(Path(folder), packaged=packaged, metrics=Metrics())
    for step in range(40):
        obj = slices(100, step % 2 * 7 or None)[0]
        view = slice_view(obj)
        views[view.name] = view
        data = PageData(service="web", namespace="default", membership=membership(views.values()),
            generated_at=now, pod_ip="10.0.0.1", changes=history(now))
        page.write(data, packaged)
    print(json.dumps({"rss_kib": rss_kib(os.getpid())}))
"""


def imports(mode: str) -> dict[str, float]:
    """One fresh process: the sidecar's imports, the client in part or whole."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS, mode],
        env={**os.environ, **IN_A_POD},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def render_ms(*, kept: bool, changes: int = 40) -> list[float]:
    """CPU milliseconds of each change's render at 10,000 members, pieces kept or not."""
    import datetime as dt

    from sidecar.page.document import PageData
    from sidecar.page.fragments import Kept, member_json
    from sidecar.page.membership import membership, slice_view
    from sidecar.page.render import PackagedPage, render_files

    views = {v.name: v for v in (slice_view(o) for o in slices(10_000, None))}
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    page, pieces = PackagedPage(), Kept(member_json)
    times = []
    for step in range(changes + 3):
        view = slice_view(slices(100, step % 2 * 7 or None)[0])
        views[view.name] = view
        data = PageData(
            service="web",
            namespace="default",
            membership=membership(views.values()),
            generated_at=now,
            pod_ip="10.0.0.1",
            changes=history(now),
        )
        if not kept:
            page, pieces = PackagedPage(), Kept(member_json)
        started = time.thread_time()
        render_files(data, page, pieces)
        if step >= 3:
            times.append((time.thread_time() - started) * 1000)
    return times


def pages_rss(mode: str, folder: Path) -> float:
    """RSS (MiB) of a fresh process after 40 changes' pages at 10,000 members, trim on or off."""
    tests = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", PAGES, mode, str(folder), str(tests)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(json.loads(result.stdout)["rss_kib"]) / 1024


def spread(values: list[float]) -> str:
    """Median (range)."""
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    """Print each mechanism's figure with and without it."""
    parser = argparse.ArgumentParser(prog="tox -e bench-pieces --", description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="repeats of each measurement")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, runs={args.runs}")
    for mode in ("part", "whole"):
        runs = [imports(mode) for _ in range(args.runs)]
        assert all(run["fallback"] is None for run in runs)
        print(
            f"client imported {mode:<5}  imports ms {spread([r['ms'] for r in runs])}"
            f"  peak RSS MiB {spread([r['rss_kib'] / 1024 for r in runs])}"
            f"  modules {statistics.median([r['modules'] for r in runs]):.0f}"
        )
    for kept in (True, False):
        medians = [statistics.median(render_ms(kept=kept)) for _ in range(max(3, args.runs // 5))]
        label = "kept   " if kept else "afresh "
        print(f"render at 10,000, pieces {label} CPU ms per change {spread(medians)}")
    with tempfile.TemporaryDirectory(dir=SHM if SHM.is_dir() else None) as tmp:
        for mode in ("on", "off"):
            values = [pages_rss(mode, Path(tmp)) for _ in range(max(3, args.runs // 5))]
            print(f"heap trim {mode:<3}  RSS after 40 pages at 10,000, MiB {spread(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
