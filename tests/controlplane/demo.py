"""The demo on a real control plane: ``tox -e demo-controlplane``.

Builds (once) and starts kube-apiserver, kube-controller-manager and etcd on loopback,
runs ``kubectl apply -k kustomize/overlays/local``, and lets a process node play kubelet:
every pod the Deployment's ReplicaSet creates becomes a real nginx and sidecar. Then
``kubectl scale`` to 4 and to 1, printing how long until the load balancer and every pod
served exactly the ready pods, and what curl gets. ``--keep`` leaves it running.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from controlplane.build import BuildError, build
from controlplane.cluster import ControlPlane
from controlplane.node import ProcessNode, ServiceProxy, converged
from support.demo import (
    DemoStopped,
    demo_start,
    run_until_stopped,
    say,
)
from support.loadbalancer import LoadBalancer
from support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "podlister"


def kubectl(plane: ControlPlane, *args: str) -> None:
    """Run kubectl, echo the command and its output; stop the demo if it fails."""
    print(f"$ kubectl {' '.join(args)}")
    result = plane.kubectl(*args)
    print(result.stdout.rstrip() or result.stderr.rstrip())
    if result.returncode != 0:
        raise SystemExit(1)


def settle(node: ProcessNode, lb: LoadBalancer, replicas: int, closing: threading.Event) -> None:
    """Wait until the pages agree with the API, then show how long it took and a curl."""
    started = time.monotonic()

    def agreed() -> bool:
        if closing.is_set():
            raise DemoStopped
        return converged(node, lb, replicas)

    wait_until(agreed, timeout=60, what=f"{replicas} replicas")
    took = time.monotonic() - started
    print(f"  {replicas} ready, every page agrees after {took:.2f} s: {node.ready_ips()}")
    print(lb.curl())


def main() -> int:
    """Run the demo; stop everything it started on Ctrl-C, SIGTERM or its parent's end."""
    begun = demo_start("python -m controlplane.demo", __doc__)
    if begun is None:
        return 2
    args, address = begun
    if args.keep:
        print(f"open http://{address}/ in a browser once the pods are up: it follows them live")
    try:
        started = time.monotonic()
        build()
    except BuildError as exc:
        print(f"control plane build failed: {exc}", file=sys.stderr)
        return 2
    print(f"control plane binaries ready in {time.monotonic() - started:.0f} s")
    root = Path(tempfile.mkdtemp(prefix="podlister-controlplane-"))
    print(f"control plane folder {root}")
    try:
        return _run(root, address, keep=args.keep)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        say(f"stopped every process; removed {root}")


def _run(root: Path, address: str, *, keep: bool) -> int:
    with contextlib.ExitStack() as running:
        plane = running.enter_context(ControlPlane(root / "controlplane"))
        print(f"API server {plane.url}; KUBECONFIG={plane.admin_kubeconfig}")
        lb = LoadBalancer(root / "lb", address).start()
        running.callback(lb.stop)
        node = ProcessNode(plane, root / "node", NAMESPACE).start()
        running.callback(node.stop)
        proxy = ServiceProxy(plane, lb, NAMESPACE, "podlister").start()
        running.callback(proxy.stop)

        def steps(closing: threading.Event) -> None:
            kubectl(plane, "apply", "--server-side", "-k", str(REPO / "kustomize/overlays/local"))
            settle(node, lb, 2, closing)
            for replicas in (4, 1):
                kubectl(
                    plane, "-n", NAMESPACE, "scale", "deploy/podlister", f"--replicas={replicas}"
                )
                settle(node, lb, replicas, closing)
            if keep:
                print(
                    f"\nrunning; try: curl {lb.url}/  or  KUBECONFIG={plane.admin_kubeconfig} "
                    "kubectl get pods -A  (Ctrl-C or SIGTERM stops)"
                )

        failed = run_until_stopped(steps, keep=keep, closing=threading.Event())
    for reason in failed:
        say(f"demo failed: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
