"""N sidecars on the real control plane: ``tox -e bench-fanout``.

A pod turns Ready as a kubelet reports it -> the real EndpointSlice controller -> the API
server's watch fan-out to N sidecars -> every one of them has written it (its index.html
replaced with the new list). For N = 10, 30, 100: p50/p99 until the last of the N, the API
server's CPU per change (its threads' schedstat over the changes, divided by their number),
and the bytes one change sends to each watcher (the EndpointSlice event as the sidecar
reads it), from which what 1,000 replicas would cost follows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.sidecar import SHM
from bench.stats import percentile
from controlplane import kubelet
from controlplane.cluster import ControlPlane
from controlplane.objects import install_base_service
from controlplane.sidecars import PlaneSidecars
from support.procstat import cpu_seconds, rss_kib

PODS = 10  # ready pods behind the Service; one of them flips


def slice_event_bytes(plane: ControlPlane, namespace: str) -> int:
    """Size of one watch event carrying the Service's slice, as JSON on the wire."""
    slices = plane.rest.get(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices")
    item = slices["items"][0]
    item.setdefault("apiVersion", "discovery.k8s.io/v1")
    item.setdefault("kind", "EndpointSlice")
    return len(json.dumps({"type": "MODIFIED", "object": item}, separators=(",", ":"))) + 1


def run(plane: ControlPlane, root: Path, replicas: int, changes: int, idle_rate: float) -> None:
    """Start N sidecars, flip one pod's readiness, time until all N have written it."""
    namespace = f"fanout-{replicas}"
    install_base_service(plane, namespace)
    ips = {f"web-{i}": f"10.245.{replicas}.{i}" for i in range(1, PODS + 1)}
    for name, ip in ips.items():
        kubelet.run_ready_pod(plane.rest, namespace, name, ip)
    kubeconfig = plane.kubeconfig_for(root / f"{namespace}.kubeconfig", namespace, "podlister")
    sidecars = PlaneSidecars(root / namespace)
    (root / namespace).mkdir()
    try:
        env = {"PODLISTER_IDLE_TIMEOUT": "90"}
        for _ in range(replicas):
            sidecars.start(kubeconfig, namespace=namespace, extra_env=env)
        in_order = sorted(ips.values(), key=lambda address: int(address.rsplit(".", 1)[1]))
        for sidecar in sidecars.started:
            sidecar.wait_addresses(in_order, timeout=120)
        pages = [sidecar.output_dir / "index.html" for sidecar in sidecars.started]
        apiserver = plane.pid("kube-apiserver")
        latencies = []
        ready = True
        cpu_before, began = cpu_seconds(apiserver), time.monotonic()
        for _ in range(changes):
            time.sleep(0.2)  # isolated: beyond the sidecars' 100 ms write interval
            ready = not ready
            inodes = [page.stat().st_ino for page in pages]
            sent = time.monotonic()
            kubelet.report(plane.rest, namespace, "web-1", ip=ips["web-1"], ready=ready)
            pending = set(range(replicas))
            deadline = sent + 20
            while pending:
                pending = {i for i in pending if pages[i].stat().st_ino == inodes[i]}
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} of {replicas} sidecars never wrote")
                time.sleep(0.0005)
            latencies.append(time.monotonic() - sent)
        # Less what it burns idle over the same time (its own timers, the controller's
        # and the sidecars' quiet watches): what the changes cost.
        spent = cpu_seconds(apiserver) - cpu_before - idle_rate * (time.monotonic() - began)
        apiserver_cpu = spent / changes
        event = slice_event_bytes(plane, namespace)
        rss = sum(rss_kib(s.pid) for s in sidecars.started) / replicas / 1024
        print(
            f"N={replicas:<4} pod Ready -> all N sidecars wrote it: "
            f"p50 {percentile(latencies, 0.5) * 1e3:7.1f} ms  "
            f"p99 {percentile(latencies, 0.99) * 1e3:7.1f} ms  (n={changes})  "
            f"API server CPU per change {apiserver_cpu * 1e3:6.1f} ms (idle rate taken off)  "
            f"event {event} B x {replicas} = {event * replicas / 1024:.1f} KiB  "
            f"sidecar RSS {rss:.1f} MiB",
            flush=True,
        )
    finally:
        sidecars.stop_all()
        plane.rest.delete(f"/api/v1/namespaces/{namespace}")


def idle_apiserver_cpu(plane: ControlPlane, seconds: float) -> float:
    """The API server's CPU per second with nothing changing (subtracted in the report)."""
    pid = plane.pid("kube-apiserver")
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def main() -> int:
    """Run N = 10, 30, 100 (or --replicas) and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--changes", type=int, default=40, help="readiness flips per N")
    parser.add_argument("--replicas", default="10,30,100", help="sidecar counts, comma separated")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    root_dir = SHM if SHM.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="podlister-fanout-", dir=root_dir) as tmp:
        root = Path(tmp)
        with ControlPlane(root / "controlplane") as plane:
            idle = idle_apiserver_cpu(plane, 10)
            print(f"API server idle: {idle * 1e3:.1f} ms CPU per second", flush=True)
            for replicas in (int(n) for n in args.replicas.split(",")):
                run(plane, root, replicas, args.changes, idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
