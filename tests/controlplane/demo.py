"""The demo on a real control plane: ``tox -e demo-controlplane``.

Builds (once) and starts kube-apiserver, kube-controller-manager and etcd on loopback,
runs ``kubectl apply -k kustomize/overlays/local``, and lets a process node play kubelet:
every pod the Deployment's ReplicaSet creates becomes a real nginx and sidecar. Then
``kubectl scale`` to 4 and to 1, printing how long until the load balancer and every pod
served exactly the ready pods, and what curl gets. ``--keep`` leaves it running.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from controlplane.build import BuildError, build
from controlplane.cluster import ControlPlane
from controlplane.node import ProcessNode, ServiceProxy, converged
from localcluster.flags import demo_arguments, hold
from localcluster.loadbalancer import LoadBalancer
from nginx_runner import INSTALL_HINT, nginx_binary
from polling import wait_until

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "podlister"


def kubectl(plane: ControlPlane, *args: str) -> None:
    """Run kubectl, echo the command and its output; stop the demo if it fails."""
    print(f"$ kubectl {' '.join(args)}")
    result = plane.kubectl(*args)
    print(result.stdout.rstrip() or result.stderr.rstrip())
    if result.returncode != 0:
        raise SystemExit(1)


def settle(node: ProcessNode, lb: LoadBalancer, replicas: int) -> None:
    """Wait until the pages agree with the API, then show how long it took and a curl."""
    started = time.monotonic()
    wait_until(lambda: converged(node, lb, replicas), timeout=60, what=f"{replicas} replicas")
    took = time.monotonic() - started
    print(f"  {replicas} ready, every page agrees after {took:.2f} s: {node.ready_ips()}")
    print(lb.curl())


def main() -> int:
    """Run the demo."""
    args = demo_arguments("python -m controlplane.demo", __doc__)
    try:
        nginx_binary()
        started = time.monotonic()
        build()
    except FileNotFoundError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"control plane build failed: {exc}", file=sys.stderr)
        return 2
    print(f"control plane binaries ready in {time.monotonic() - started:.0f} s")
    with tempfile.TemporaryDirectory(prefix="podlister-controlplane-") as tmp:
        root = Path(tmp)
        with ControlPlane(root / "controlplane") as plane:
            print(f"API server {plane.url}; KUBECONFIG={plane.admin_kubeconfig}")
            kubectl(plane, "apply", "--server-side", "-k", str(REPO / "kustomize/overlays/local"))
            lb = LoadBalancer(root / "lb", f"127.0.0.1:{args.port}").start()
            node = ProcessNode(plane, root / "node", NAMESPACE).start()
            proxy = ServiceProxy(plane, lb, NAMESPACE, "podlister").start()
            try:
                settle(node, lb, 2)
                for replicas in (4, 1):
                    kubectl(
                        plane,
                        "-n",
                        NAMESPACE,
                        "scale",
                        "deploy/podlister",
                        f"--replicas={replicas}",
                    )
                    settle(node, lb, replicas)
                hold(args, f"curl {lb.url}/  or  KUBECONFIG=... kubectl get pods")
            except KeyboardInterrupt:
                pass
            finally:
                proxy.stop()
                node.stop()
                lb.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
