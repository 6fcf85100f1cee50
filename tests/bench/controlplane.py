"""Benchmark through the real control plane: ``tox -e bench-controlplane``.

A pod's status turns Ready (or not) as a kubelet writes it -> the real EndpointSlice
controller updates the slice -> the API server streams it -> the sidecar's index.html on
disk shows it. Isolated changes: one pod of N flips, spaced beyond the write interval.
``bench.sidecar`` times the sidecar alone, from the slice change on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.sidecar import SHM, wait_change
from bench.stats import summary
from controlplane import kubelet
from controlplane.cluster import ControlPlane
from controlplane.objects import install_base_service
from support.ports import free_port
from support.sidecar_process import SidecarProcess

NAMESPACE = "bench"


def run(plane: ControlPlane, root: Path, pods: int, changes: int) -> None:
    """Start N ready pods and a sidecar, then time isolated readiness flips."""
    install_base_service(plane, NAMESPACE)
    ips = {f"web-{i}": f"10.244.2.{i}" for i in range(1, pods + 1)}
    for name, ip in ips.items():
        kubelet.run_ready_pod(plane.rest, NAMESPACE, name, ip)
    out = root / "out"
    out.mkdir()
    sidecar = SidecarProcess(
        kubeconfig=plane.kubeconfig_for(root / "sa.kubeconfig", NAMESPACE, "podlister"),
        output_dir=out,
        log_path=root / "sidecar.log",
        service="podlister",
        namespace=NAMESPACE,
        health_addr=f"127.0.0.1:{free_port()}",
        extra_env={"PODLISTER_IDLE_TIMEOUT": "90"},
    ).start()
    try:
        in_order = sorted(ips.values(), key=lambda address: int(address.rsplit(".", 1)[1]))
        sidecar.wait_addresses(in_order, timeout=30)
        page = out / "index.html"
        latencies = []
        ready = True
        for _ in range(changes):
            time.sleep(0.15)  # isolated: beyond the 100 ms write interval
            ready = not ready
            inode = page.stat().st_ino
            sent = time.monotonic()
            kubelet.report(plane.rest, NAMESPACE, "web-1", ip=ips["web-1"], ready=ready)
            latencies.append(wait_change(page, inode) - sent)
        print(f"{pods:>4} pods  pod status -> index.html {summary(latencies)}", flush=True)
    finally:
        sidecar.stop()


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.controlplane", description=__doc__)
    parser.add_argument("--changes", type=int, default=60, help="readiness flips to time")
    parser.add_argument("--pods", type=int, default=10, help="ready pods behind the Service")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; times in ms")
    root_dir = SHM if SHM.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="podlister-bench-", dir=root_dir) as tmp:
        root = Path(tmp)
        with ControlPlane(root / "controlplane") as plane:
            run(plane, root, args.pods, args.changes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
