"""kube-router's network policy controller on the node: a real NetworkPolicy enforcer (the
bridge CNI enforces none), built from its Go module (``kube_router/go.mod``).

It runs as the node's other daemons do, a process in the node's namespaces (a cluster runs it
as a DaemonSet with host networking), with its routing and service proxy off: kube-proxy and
the bridge keep those jobs. Its iptables chains and ipsets live in the node's network
namespace and go with it. It filters a pod's traffic on the FORWARD, INPUT and OUTPUT hooks,
so a pod's egress to the node's own addresses (the API server here) is held to the policy too.

kube-network-policies was tried first: its rules need nftables' ``queue`` expression, which
this kernel does not have ("Could not process rule: No such file or directory").
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from support import verified_cache as cache

MODULE = Path(__file__).resolve().parent / "kube_router"


def build() -> Path:
    """The kube-router binary, built once per go.sum (a verified cache)."""
    go = shutil.which("go")
    assert go, "kube-router is built with the Go toolchain (>= 1.26)"
    key = hashlib.sha256((MODULE / "go.sum").read_bytes()).hexdigest()[:12]

    def fill(staging: Path) -> None:
        subprocess.run(
            [
                *(go, "build", "-o", f"{staging}/"),
                "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
            ],
            cwd=MODULE,
            check=True,
            timeout=1800,
            capture_output=True,
        )

    return cache.filled(cache.root() / f"kube-router-{key}", fill) / "kube-router"


def command(binary: Path, kubeconfig: Path, node_name: str, service_cidr: str) -> list[str]:
    """kube-router as a NetworkPolicy enforcer only."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node_name}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        # Traffic to Service addresses is let through to kube-proxy's rules: the policy
        # is then applied to the pod it lands on.
        f"--service-cluster-ip-range={service_cidr}",
        "--enable-ipv6=false",
        "--health-port=0",
        "--metrics-port=0",
    ]
