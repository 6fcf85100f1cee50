"""MetalLB on the node: the load balancer controller that gives a LoadBalancer Service its
external IP, as DigitalOcean's cloud controller does on DOKS (which is not served here).

Its controller assigns an address from a pool on the VPC bridge, and its speaker, on node-1 in
layer 2 mode, answers ARP for that address on the bridge; kube-proxy then routes what arrives
for it to the Service's pods. Both run as the node's other daemons do, processes in its
namespaces (a cluster runs them as a Deployment and a DaemonSet), built from MetalLB's Go
module (``metallb/go.mod``); its CRDs come from the same module. Memberlist is off: with one
speaker there is nobody to agree with, so the address is announced from node-1 only (a lost
worker takes no address with it).

What MetalLB does not do of DigitalOcean's balancer: every ``service.beta.kubernetes.io/
do-loadbalancer-*`` annotation is ignored (no HTTP protocol, no health check of ``/readyz``:
the address leads straight to kube-proxy's rules, which send only to Ready pods).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from support import verified_cache as cache
from support.polling import wait_until

if TYPE_CHECKING:
    from node.cluster import Node

MODULE = Path(__file__).resolve().parent / "metallb"
NAMESPACE = "metallb-system"
SPEAKER_LABELS = {"app": "metallb", "component": "speaker"}
PACKAGES = ("go.universe.tf/metallb/controller", "go.universe.tf/metallb/speaker")
CRDS = (
    *("ipaddresspools", "l2advertisements", "servicel2statuses", "bgppeers", "bfdprofiles"),
    *("bgpadvertisements", "communities", "configurationstates", "servicebgpstatuses"),
)


def build() -> Path:
    """A folder with the controller and speaker binaries and MetalLB's CRDs, built once per
    go.sum (a verified cache).
    """
    go = shutil.which("go")
    assert go, "MetalLB is built with the Go toolchain (>= 1.26)"
    key = hashlib.sha256((MODULE / "go.sum").read_bytes()).hexdigest()[:12]

    def fill(staging: Path) -> None:
        subprocess.run(
            [go, "build", "-o", f"{staging}/", *PACKAGES],
            cwd=MODULE,
            check=True,
            timeout=1800,
            capture_output=True,
        )
        # The module's source, as go.sum verified it when it was downloaded for the build.
        listed = subprocess.run(
            [go, "list", "-m", "-json", "go.universe.tf/metallb"],
            cwd=MODULE,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        source = Path(json.loads(listed.stdout)["Dir"]) / "config" / "crd" / "bases"
        (staging / "crds").mkdir()
        for name in CRDS:
            crd = f"metallb.io_{name}.yaml"
            shutil.copyfile(source / crd, staging / "crds" / crd)

    return cache.filled(cache.root() / f"metallb-{key}", fill)


def start(node: Node, folder: Path, pool: str, node_name: str, node_ip: str) -> None:
    """Install the CRDs, the pool and its layer 2 advertisement, and run both processes."""
    assert node.controlplane is not None
    for crd in sorted((folder / "crds").iterdir()):
        installed = node.kubectl("apply", "--server-side", "-f", str(crd))
        assert installed.returncode == 0, installed.stderr
    for name in CRDS:
        established = node.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}.metallb.io", "--timeout=60s"
        )
        assert established.returncode == 0, established.stderr
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": "vpc", "namespace": NAMESPACE},
            "spec": {"addresses": [pool]},
        },
        {
            # The speaker ties its status objects to its own Pod (it reads it at start): a
            # DaemonSet's pause pod on the node stands for the speaker's, the speaker being
            # a process (and, a DaemonSet's, it is left alone by kubectl drain).
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "speaker", "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": SPEAKER_LABELS},
                "template": {
                    "metadata": {"labels": SPEAKER_LABELS},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node_name},
                        "containers": [{"name": "pause", "image": node.image_refs["pause"]}],
                        "terminationGracePeriodSeconds": 0,
                    },
                },
            },
        },
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": "vpc", "namespace": NAMESPACE},
            # Announced from node_name only, where the one speaker runs: with memberlist off
            # a speaker counts every node as one that announces (it assumes a speaker on
            # each), and the address's owner could be a node that has none.
            "spec": {
                "ipAddressPools": ["vpc"],
                "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": node_name}}],
            },
        },
    ]
    for item in objects:
        applied = node.kubectl("apply", "-f", "-", input_text=json.dumps(item))
        assert applied.returncode == 0, applied.stderr
    rest = node.controlplane.rest
    selector = ",".join(f"{key}={value}" for key, value in SPEAKER_LABELS.items())

    def speaker_pod() -> str:
        found = rest.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}")
        return next((pod["metadata"]["name"] for pod in found["items"]), "")

    pod_name = wait_until(speaker_pod, timeout=60, interval=0.2, what="the speaker's pod")
    kubeconfig = f"KUBECONFIG={node.controlplane.inner_kubeconfig}"
    node.controlplane.launch(
        "metallb-controller",
        [
            *("env", kubeconfig, str(folder / "controller")),
            f"--namespace={NAMESPACE}",
            # No webhook: it validates the pool objects, which the harness writes itself.
            "--webhook-mode=disabled",
            "--disable-cert-rotation",
            "--port=7472",
            "--log-level=warn",
        ],
    )
    node.controlplane.launch(
        "metallb-speaker",
        [
            *("env", kubeconfig, str(folder / "speaker")),
            f"--namespace={NAMESPACE}",
            f"--node-name={node_name}",
            f"--pod-name={pod_name}",
            f"--host={node_ip}",
            "--port=7473",
            "--ml-bindaddr=",
            "--log-level=warn",
        ],
    )
