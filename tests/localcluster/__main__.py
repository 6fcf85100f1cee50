"""The demo: ``tox -e demo`` (or ``python -m localcluster`` with tests/ on PYTHONPATH).

Starts 3 pods behind a load balancer, curls through it, scales to 6 and then to 2, printing
what the curls return and how long every replica took to converge. ``--keep`` leaves it
running until Ctrl-C or SIGTERM; either stops every process it started and removes its folder.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from localcluster.cluster import ClusterClosingError, LocalCluster
from support.demo import (
    DemoStopped,
    demo_start,
    run_until_stopped,
    say,
)

if TYPE_CHECKING:
    import threading


def curl(cluster: LocalCluster, times: int) -> None:
    """Print what plain curls through the load balancer get."""
    for _ in range(times):
        print(cluster.lb.curl())


def step(cluster: LocalCluster, replicas: int) -> None:
    """Scale, then report per-replica convergence after the last pod turned ready or left."""
    started = time.monotonic()
    try:
        cluster.scale_to(replicas)
    except ClusterClosingError as exc:
        raise DemoStopped from exc
    changed = time.monotonic()
    expected = cluster.ready_ips()
    pending = dict(cluster.pods)
    took: dict[str, float] = {}
    deadline = changed + 10
    while pending and time.monotonic() < deadline:
        for index, pod in list(pending.items()):
            if cluster.page_of(pod) == expected:
                took[pod.ip] = time.monotonic() - changed
                del pending[index]
    print(f"\nscaled to {replicas} in {changed - started:.2f}s (processes start, probes pass)")
    for ip, seconds in sorted(took.items()):
        print(f"  {ip:<13} serves the new list {seconds * 1000:7.1f} ms after the change")
    for pod in pending.values():
        print(f"  {pod.ip:<13} did NOT converge within 10 s")
    curl(cluster, min(replicas, 4))
    if pending:
        raise SystemExit(1)


def main() -> int:
    """Run the demo; stop everything it started on Ctrl-C, SIGTERM or its parent's end."""
    begun = demo_start("python -m localcluster", __doc__)
    if begun is None:
        return 2
    args, address = begun
    cluster = LocalCluster(lb_address=address)
    if args.keep:
        print(f"open http://{address}/ in a browser: it follows the pods live")
    else:
        print(f"load balancer on http://{address}/ (add --keep to open it in a browser)")

    def steps(_closing: threading.Event) -> None:
        for replicas in (3, 6, 2):
            step(cluster, replicas)
        if args.keep:
            print(f"\nrunning; open {cluster.lb.url}/ or curl it (Ctrl-C or SIGTERM stops)")

    try:
        cluster.start()
        print(f"local cluster in {cluster.root}")
        failed = run_until_stopped(steps, keep=args.keep, closing=cluster.closing)
    finally:
        cluster.stop()
        say(f"stopped every process; removed {cluster.root}")
    for reason in failed:
        say(f"demo failed: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
