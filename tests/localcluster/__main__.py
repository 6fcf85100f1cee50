"""The demo: ``tox -e demo`` (or ``python -m localcluster`` with tests/ on PYTHONPATH).

Starts 3 pods behind a load balancer, curls through it, scales to 6 and then to 2, printing
what the curls return and how long every replica took to converge. ``--keep`` leaves it
running until Ctrl-C or SIGTERM; either stops every process it started and removes its folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

from localcluster.cluster import ClusterClosingError, LocalCluster
from localcluster.flags import demo_arguments
from nginx_runner import INSTALL_HINT, nginx_binary

# How often the waiting demo checks that whoever started it (tox) is still there: tox does
# not pass SIGTERM on, it just ends, and the demo must not outlive it with six servers.
PARENT_CHECK_SECONDS = 0.5
# The scaling in progress finishes its current pod (its waits are bounded) before we stop.
STEP_GRACE_SECONDS = 45


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


def run_steps(
    cluster: LocalCluster, *, keep: bool, done: threading.Event, failed: list[str]
) -> None:
    """Scale 3 -> 6 -> 2; set done at the end unless the demo is to keep running."""
    try:
        for replicas in (3, 6, 2):
            step(cluster, replicas)
    except ClusterClosingError:
        return
    except (SystemExit, Exception) as exc:  # noqa: BLE001 - reported, then the demo stops
        if cluster.closing.is_set():
            return  # stopped under it: whatever the step ran into is not a failure
        failed.append(f"{type(exc).__name__}: {exc}")
        done.set()
        return
    if keep:
        print(f"\nrunning; open {cluster.lb.url}/ or curl it (Ctrl-C or SIGTERM stops)")
    else:
        done.set()


def main() -> int:
    """Run the demo; stop everything it started on Ctrl-C, SIGTERM or its parent's end."""
    # Each line out at once, also into a file or a pipe (tox, `> demo.log`).
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    args = demo_arguments("python -m localcluster", __doc__)
    try:
        nginx_binary()
    except FileNotFoundError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    parent = os.getppid()
    cluster = LocalCluster(lb_port=args.port)
    failed: list[str] = []
    try:
        cluster.start()
        print(f"open {cluster.lb.url}/ in a browser: it follows the pods live")
        print(f"local cluster in {cluster.root}")
        demo = threading.Thread(
            target=run_steps,
            args=(cluster,),
            kwargs={"keep": args.keep, "done": done, "failed": failed},
            daemon=True,
        )
        demo.start()
        while not done.wait(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                say("the process that started the demo is gone: stopping")
                break
        cluster.closing.set()
        demo.join(timeout=STEP_GRACE_SECONDS)
    finally:
        cluster.stop()
        say(f"stopped every process; removed {cluster.root}")
    for reason in failed:
        say(f"demo failed: {reason}")
    return 1 if failed else 0


def say(line: str) -> None:
    """Print, unless nobody reads any more (tox ended and took the pipe with it)."""
    with contextlib.suppress(OSError):
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
