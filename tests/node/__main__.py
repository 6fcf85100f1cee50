"""A real cluster of three nodes to try things on: ``tox -e node`` (``python -m node`` from
tests/).

Brings the nodes up (building what is missing), applies the local overlay through the
image-only overlay, and prints how to reach it: a kubeconfig on the host's loopback, the
node port forwarded to a loopback port of the host (open it in a browser), and the
``nsenter`` line that puts a shell inside the node. Without --keep it stops once the pods
are up; with it, on Ctrl-C or SIGTERM. Either way every process goes, and the host's
sysctls and cgroups are put back.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from node.cluster import NODE_IP, POOL_WORKERS, Node
from node.overlay import image_overlay
from support.demo import demo_arguments, line_buffered_output, run_until_stopped, say

NODE_PORT = 30080


def main() -> int:
    """Run the node; 1 if a step failed."""
    line_buffered_output()
    args = demo_arguments("python -m node", __doc__)
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
            overlay = image_overlay(root / "overlay", "local", node.image_refs)
            applied = node.kubectl("apply", "-k", str(overlay))
            say(applied.stdout.rstrip() or applied.stderr.rstrip())
            rolled = node.kubectl(
                "-n", "podlister", "rollout", "status", "deploy/podlister", "--timeout=180s"
            )
            say(rolled.stdout.rstrip() or rolled.stderr.rstrip())
            assert node.controlplane is not None
            assert node.namespaces is not None
            page = node.forward(NODE_IP, NODE_PORT)
            say(f"curl http://{page.address}/   (the node port {NODE_IP}:{NODE_PORT}, forwarded)")
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
