"""A real cluster of three nodes to try things on: ``tox -e cluster`` (``python -m node``
from tests/).

Brings the nodes up (building what is missing), applies the do overlay (the README's deploy;
its images set to the nodes' registry), and prints how to reach it: the load balancer's
address that MetalLB gave the Service, forwarded from the machine outside the cluster to a
loopback port of the host (open it in a browser), a kubeconfig on the host's loopback, and
the ``nsenter`` line that puts a shell inside node-1. Without --keep it stops once the pods
are up; with it, on Ctrl-C or SIGTERM. Either way every process goes, and the host's
sysctls and cgroups are put back.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from node.cluster import OUTSIDE, POOL_WORKERS, Node
from node.overlay import image_overlay
from support.demo import demo_arguments, line_buffered_output, run_until_stopped, say
from support.polling import wait_until


def answers(node: Node, address: str) -> bool:
    """Whether the page answers 200 at address:80 from the machine outside the cluster."""
    try:
        return node.http(address, 80, "/index.txt", timeout=2, on=OUTSIDE).status == 200
    except OSError:
        return False


def main() -> int:
    """Run the node; 1 if a step failed."""
    line_buffered_output()
    args = demo_arguments("tox -e cluster", __doc__)
    root = Path(tempfile.mkdtemp(prefix="podlister-node-"))
    say(f"node folder {root} (logs of every process under it)")
    node = Node(root / "node", workers=POOL_WORKERS)
    try:
        started = time.monotonic()
        # In the main thread: the node lives as long as the thread that started it (its
        # namespaces die with it), and Ctrl-C during the start stops it here.
        try:
            node.start()
        except Exception as exc:  # noqa: BLE001 - one line, then everything is stopped
            say(f"node failed to start: {type(exc).__name__}: {str(exc)[-2000:]}")
            return 1
        say(f"nodes Ready after {time.monotonic() - started:.0f} s: {node.timings}")

        def steps(closing: threading.Event) -> None:
            overlay = image_overlay(root / "overlay", "do", node.image_refs)
            applied = node.kubectl("apply", "-k", str(overlay))
            say(applied.stdout.rstrip() or applied.stderr.rstrip())
            rolled = node.kubectl(
                "-n", "podlister", "rollout", "status", "deploy/podlister", "--timeout=180s"
            )
            say(rolled.stdout.rstrip() or rolled.stderr.rstrip())
            assert node.controlplane is not None
            assert node.namespaces is not None
            address = wait_until(
                lambda: (
                    node.kubectl(
                        *("-n", "podlister", "get", "svc", "podlister"),
                        "-o=jsonpath={.status.loadBalancer.ingress[0].ip}",
                    ).stdout
                ),
                timeout=60,
                interval=0.2,
                what="the load balancer's IP",
            )
            # Printed once it answers: MetalLB's speaker announces the address (answers ARP
            # for it) only after it has seen the Service's ready endpoints.
            wait_until(
                lambda: answers(node, address),
                timeout=60,
                interval=0.2,
                what="the load balancer's IP answering",
            )
            page = node.forward(address, 80, on=OUTSIDE)
            say(f"curl http://{page.address}/   (the load balancer's IP {address}, forwarded)")
            say(f"KUBECONFIG={node.controlplane.admin_kubeconfig} kubectl get pods -A")
            say(f"a shell inside: {' '.join(node.namespaces.command('bash'))}")
            if args.keep and not closing.is_set():
                say("running (Ctrl-C or SIGTERM stops)")

        failed = run_until_stopped(steps, keep=args.keep, closing=threading.Event())
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
        say(f"stopped every process; removed {root}")
    for reason in failed:
        say(f"node failed: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
