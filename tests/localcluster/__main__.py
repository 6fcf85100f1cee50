"""The demo: ``tox -e demo`` (or ``python -m localcluster`` with tests/ on PYTHONPATH).

Starts 3 pods behind a load balancer, curls through it, scales to 6 and then to 2, printing
what the curls return and how long every replica took to converge. ``--keep`` leaves it running.
"""

from __future__ import annotations

import sys
import time

from localcluster.cluster import LocalCluster
from localcluster.flags import demo_arguments, hold
from nginx_runner import INSTALL_HINT, nginx_binary


def curl(cluster: LocalCluster, times: int) -> None:
    """Print what plain curls through the load balancer get."""
    for _ in range(times):
        print(cluster.lb.curl())


def step(cluster: LocalCluster, replicas: int) -> None:
    """Scale, then report per-replica convergence after the last pod turned ready or left."""
    started = time.monotonic()
    cluster.scale_to(replicas)
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
        print(f"  {ip:<11} serves the new list {seconds * 1000:7.1f} ms after the change")
    for pod in pending.values():
        print(f"  {pod.ip:<11} did NOT converge within 10 s")
    curl(cluster, min(replicas, 4))
    if pending:
        raise SystemExit(1)


def main() -> int:
    """Run the demo."""
    args = demo_arguments("python -m localcluster", __doc__)
    try:
        nginx_binary()
    except FileNotFoundError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    cluster = LocalCluster(lb_port=args.port).start()
    print(f"local cluster in {cluster.root}; load balancer {cluster.lb.url}")
    try:
        for replicas in (3, 6, 2):
            step(cluster, replicas)
        hold(args, f"curl {cluster.lb.url}/")
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
