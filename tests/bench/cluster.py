"""Pod Ready -> every page, and what N replicas cost, on the three nodes: ``tox -e
bench-cluster``.

The cluster of tests/node (three nodes, each a kubelet, containerd, kube-proxy and
kube-router; the real control plane) runs the local overlay. Per N (10, 30, 100 by default):

1. Once, 2 -> N: the time until every page lists all N; the CPU the sidecars spent (their
   containers' cgroups: the N - 2 new sidecars' whole lives, start included, and what the 2
   old ones spent meanwhile) and the API server's; the EndpointSlice watch events the
   sidecars received against the page sets they wrote (the publisher's coalescing); the
   seconds the sidecars were throttled by their CPU limit (CFS), in all and the most in one;
   their RSS and their containers' peak memory against the limit.
2. kube-apiserver SIGKILLed and started again: from it being ready until every sidecar has
   listed again, and what the new server spent meanwhile.
3. Trials: N - 1 -> N. A streaming watch on the pods notes (wall clock) when the new pod
   turns Ready; each pod's index.txt is read where its emptyDir lives (a tmpfs in the node's
   mount namespace) until every one lists the new pod, and its mtime is when that page was
   written (a sidecar writes a temporary file and renames it, and leaves an unchanged page
   alone). Lag = the last page's write - Ready. Between the scale and that moment nothing
   else asks the API server anything and nothing is read over HTTP, so the reading takes
   little from what it measures (tmpfs timestamps here are finer than a millisecond);
   that nginx serves every page is checked after. Per trial also the API server's
   CPU over that window and, from its own metrics, the size of the EndpointSlice watch
   events it sent.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.stats import percentile
from controlplane.cluster import ADMIN_TOKEN
from node.cluster import POOL_WORKERS, Node
from node.costs import cost
from node.overlay import image_overlay
from node.pods import NAMESPACE, SELECTOR, every_page_lists_the_ready_pods, is_ready, pods, scale
from support.polling import wait_until
from support.procstat import tree_cpu_seconds as cpu_seconds

TRIAL_TIMEOUT = 120.0
MIB = 1024 * 1024
LIMIT_MIB = 160  # the sidecar container's memory limit (k8s/deployment.yaml)
WRITES = "podlister_writes_total"
RSS = "process_resident_memory_bytes"
# What a sidecar takes in: every watch event (BOOKMARKs too) and every full list.
LISTS = "podlister_lists_total"
CHANGES_IN = ("podlister_watch_events_total", LISTS)


class ReadyWatch:
    """A watch on the pods: when (wall clock) each pod IP was first seen Ready."""

    def __init__(self, node: Node) -> None:
        """List, then watch from the list's resourceVersion in a thread of its own."""
        assert node.controlplane is not None
        plane = node.controlplane
        parsed = urllib.parse.urlsplit(plane.url)
        context = ssl.create_default_context(cafile=str(plane.ca_file))
        self._connection = http.client.HTTPSConnection(
            parsed.hostname or "", parsed.port, context=context, timeout=TRIAL_TIMEOUT * 4
        )
        listed = plane.rest.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={SELECTOR}")
        self.ready_at: dict[str, float] = {}
        self.ready_pods: dict[str, dict[str, Any]] = {}
        self._noted = threading.Condition()
        self._stopping = threading.Event()
        self._note(listed["items"])
        query = urllib.parse.urlencode(
            {
                "watch": "true",
                "labelSelector": SELECTOR,
                "resourceVersion": listed["metadata"]["resourceVersion"],
                "timeoutSeconds": str(int(TRIAL_TIMEOUT * 4)),
            }
        )
        self._connection.request(
            "GET",
            f"/api/v1/namespaces/{NAMESPACE}/pods?{query}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        self._response = self._connection.getresponse()
        self._thread = threading.Thread(target=self._read, name="ready-watch", daemon=True)
        self._thread.start()

    def _note(self, pods: list[dict[str, Any]]) -> None:
        now = time.time()  # wall clock: compared with the pages' mtimes
        with self._noted:
            for pod in pods:
                ip = pod.get("status", {}).get("podIP")
                if ip and is_ready(pod):
                    self.ready_at.setdefault(ip, now)
                    self.ready_pods.setdefault(ip, pod)
            self._noted.notify_all()

    def _read(self) -> None:
        try:
            for line in self._response:
                event = json.loads(line)
                if event.get("type") in {"ADDED", "MODIFIED"}:
                    self._note([event["object"]])
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            # stop() closed the socket under the read: http.client fails in one of these.
            if not self._stopping.is_set():
                raise

    def new_ready(self, known: set[str], timeout: float) -> tuple[str, float]:
        """The first pod IP not in known to turn Ready, and when; waits at most timeout."""
        with self._noted:
            self._noted.wait_for(lambda: set(self.ready_at) - known, timeout)
            fresh = sorted(set(self.ready_at) - known, key=self.ready_at.__getitem__)
            assert fresh, f"no new pod turned Ready in {timeout} s"
            return fresh[0], self.ready_at[fresh[0]]

    def stop(self) -> None:
        """End the watch (its socket closed under the read) and the thread."""
        self._stopping.set()
        if self._connection.sock is not None:
            self._connection.sock.shutdown(2)
        self._connection.close()
        self._thread.join(timeout=10)


def page_file(node: Node, pod: dict[str, Any]) -> Path:
    """The pod's index.txt in its page emptyDir, as the host sees it through the node's mount
    namespace (the emptyDir is a tmpfs mounted there by the kubelet).
    """
    machine = next(m for m in node.machines if m.name == pod["spec"]["nodeName"])
    inside = machine.workdir / "kubelet" / "pods" / pod["metadata"]["uid"]
    volume = inside / "volumes" / "kubernetes.io~empty-dir" / "page" / "index.txt"
    return Path(f"/proc/{machine.namespaces.init_pid}/root{volume}")


def settle(node: Node, replicas: int, timeout: float = 600) -> None:
    """Until replicas pods are Ready, no other pod is left, and every page lists exactly them."""
    wait_until(
        lambda: every_page_lists_the_ready_pods(node, replicas),
        timeout=timeout,
        interval=0.5,
        what=f"{replicas} pods listed everywhere",
    )


def trial(node: Node, replicas: int) -> tuple[float, float, float]:
    """Scale replicas - 1 -> replicas: (the last page's write after Ready, the API server's
    CPU seconds, bytes per EndpointSlice watch event: what a change sends one watcher).

    Between the scale and the last page written nothing but the pod watch asks the API
    server anything, and the pages are read from their files (a hundred small tmpfs reads
    every 50 ms), not over HTTP: the reading takes little CPU from what it measures. That
    nginx serves them is checked after, by settle().
    """
    assert node.controlplane is not None
    before = [pod for pod in pods(node) if is_ready(pod)]
    apiserver = node.controlplane.pid("kube-apiserver")
    watch = ReadyWatch(node)
    try:
        sent_before = watch_events(node)
        cpu_before = cpu_seconds(apiserver)
        scale(node, replicas)
        new_ip, ready_at = watch.new_ready({p["status"]["podIP"] for p in before}, TRIAL_TIMEOUT)
        files = [page_file(node, pod) for pod in [*before, watch.ready_pods[new_ip]]]
        wait_until(
            lambda: all(new_ip in page.read_text().split() for page in files),
            timeout=TRIAL_TIMEOUT,
            interval=0.05,
            what=f"every page file listing {new_ip}",
        )
        cpu = cpu_seconds(apiserver) - cpu_before
        sent = [
            after - earlier for after, earlier in zip(watch_events(node), sent_before, strict=True)
        ]
    finally:
        watch.stop()
    # When each page was written is its file's mtime (the sidecar writes a temporary file
    # and renames it, and leaves an unchanged page alone).
    written = [page.stat().st_mtime_ns / 1e9 for page in files]
    settle(node, replicas, timeout=TRIAL_TIMEOUT)
    return max(written) - ready_at, cpu, sent[1] / sent[0] if sent[0] else 0.0


def watch_events(node: Node) -> tuple[float, float]:
    """EndpointSlice watch events the API server has sent so far, and their bytes."""
    assert node.controlplane is not None
    text = node.controlplane.rest.text("/metrics")
    slices = 'resource="endpointslices"'
    return (
        summed(text, "apiserver_watch_events_total", slices),
        summed(text, "apiserver_watch_events_sizes_sum", slices),
    )


def summed(text: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples in /metrics text, over those whose labels hold label."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.split("{", 1)[0].split(" ", 1)[0] == name and label in line
    )


def sidecar_metrics(node: Node, pod: dict[str, Any]) -> dict[str, float]:
    """A sidecar's counters, read from its own node (the NetworkPolicy lets the pod's node in):
    page sets written, watch events received, resident memory.
    """
    text = node.http(pod["status"]["podIP"], 8081, "/metrics", on=pod["spec"]["nodeName"]).text()
    return {name: summed(text, name) for name in (WRITES, RSS, *CHANGES_IN)}


def scale_up(node: Node, replicas: int) -> None:
    """2 -> replicas, once: what the sidecars and the API server spent until every page
    listed them all; the changes the sidecars took in (watch events and lists) against the
    page sets they wrote; throttling by the CPU limit, of the 2 sidecars there all along
    (they render every change) and of the new ones (their start included); memory at the end.
    """
    assert node.controlplane is not None
    scale(node, 2)
    settle(node, 2)
    apiserver = node.controlplane.pid("kube-apiserver")
    first = {pod["metadata"]["uid"]: cost(node, pod, "sidecar") for pod in pods(node)}
    counted = {pod["metadata"]["uid"]: sidecar_metrics(node, pod) for pod in pods(node)}
    cpu_before, started = cpu_seconds(apiserver), time.monotonic()
    scale(node, replicas)
    settle(node, replicas)
    took, apiserver_cpu = time.monotonic() - started, cpu_seconds(apiserver) - cpu_before
    found = pods(node)
    sidecar_cpu = 0.0
    throttled: dict[bool, list[float]] = {True: [], False: []}  # old sidecar? -> seconds
    rss, peak = [], []
    taken_in = written = 0.0
    for pod in found:
        uid = pod["metadata"]["uid"]
        now, earlier = cost(node, pod, "sidecar"), first.get(uid)
        assert now is not None, uid
        sidecar_cpu += now.cpu_seconds - (earlier.cpu_seconds if earlier else 0.0)
        throttled[uid in first].append(
            now.throttled_seconds - (earlier.throttled_seconds if earlier else 0.0)
        )
        peak.append(now.peak_bytes / MIB)
        metrics, before = sidecar_metrics(node, pod), counted.get(uid, {})
        taken_in += sum(metrics[key] - before.get(key, 0.0) for key in CHANGES_IN)
        written += metrics[WRITES] - before.get(WRITES, 0.0)
        rss.append(metrics[RSS] / MIB)
    print(
        f"N={replicas:<3} scale-up 2 -> {replicas}: {took:5.1f} s until every page listed all;"
        f" sidecars' CPU {sidecar_cpu:6.1f} s ({sidecar_cpu / replicas * 1e3:4.0f} ms each);"
        f" API server CPU {apiserver_cpu:5.1f} s; changes taken in {taken_in:6.0f}, page sets"
        f" written {written:6.0f} ({1 - written / taken_in if taken_in else 0:.0%} coalesced);"
        f" throttled, the 2 there all along: max {max(throttled[True]) * 1e3:4.0f} ms,"
        f" the new ones: p50 {percentile(throttled[False], 0.5) * 1e3:4.0f}"
        f" max {max(throttled[False]) * 1e3:4.0f} ms; RSS p50 {percentile(rss, 0.5):5.1f}"
        f" max {max(rss):5.1f} MiB; cgroup peak max {max(peak):5.1f} of {LIMIT_MIB} MiB",
        flush=True,
    )


def restart(node: Node, replicas: int) -> None:
    """kube-apiserver SIGKILLed and started again under the N pods: from its new process's
    start until it is ready and until every sidecar has listed again (its
    podlister_lists_total one up), and the CPU the new server spent by then (its own start
    and the relists of the nodes' daemons included).
    """
    assert node.controlplane is not None
    plane = node.controlplane
    found = pods(node)

    def api_ready() -> bool:
        try:
            return plane.rest.text("/readyz", timeout=1) == "ok"
        except (OSError, RuntimeError):
            return False

    lists_before = {pod["metadata"]["uid"]: sidecar_metrics(node, pod)[LISTS] for pod in found}
    plane.kill_apiserver()
    # Down until its port is free again (the killed process gone for good), as a crash
    # leaves it; a new one cannot bind before.
    assert node.namespaces is not None
    inside = node.namespaces
    wait_until(
        lambda: not inside.must("ss", "-Hltn", "sport = :6443").strip(),
        timeout=30,
        interval=0.1,
        what="port 6443 free",
    )
    plane.start_again("kube-apiserver")
    started = time.monotonic()
    apiserver = plane.pid("kube-apiserver")

    def relisted(pod: dict[str, Any]) -> bool:
        try:
            return sidecar_metrics(node, pod)[LISTS] > lists_before[pod["metadata"]["uid"]]
        except OSError:
            return False

    ready = relisted_all = 0.0
    pending = list(found)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        while not (ready and relisted_all):
            assert time.monotonic() - started < TRIAL_TIMEOUT, f"{len(pending)} never relisted"
            if not ready and api_ready():
                ready = time.monotonic() - started
            if pending:
                done = list(pool.map(relisted, pending))
                pending = [pod for pod, yes in zip(pending, done, strict=True) if not yes]
                relisted_all = 0.0 if pending else time.monotonic() - started
    cpu = cpu_seconds(apiserver)
    print(
        f"N={replicas:<3} API server restarted: ready (/readyz ok) {ready:5.2f} s after its"
        f" process started, every sidecar relisted {relisted_all:5.2f} s after it (a round of"
        f" {replicas} metric reads: {relisted_all - ready:+.2f} s against ready); its CPU by"
        f" then {cpu:5.2f} s",
        flush=True,
    )


def run(node: Node, root: Path, sizes: list[int], trials: int) -> None:
    """Apply the local overlay; per size a scale-up from 2, then the trials; the overlay
    deleted at the end.
    """
    overlay = image_overlay(root / "local", "local", node.image_refs)
    applied = node.kubectl("apply", "-k", str(overlay))
    assert applied.returncode == 0, applied.stderr
    try:
        for replicas in sizes:
            scale_up(node, replicas)
            restart(node, replicas)
            lags, cpus, event_sizes = [], [], []
            for _ in range(trials):
                scale(node, replicas - 1)
                settle(node, replicas - 1)
                lag, cpu, event_bytes = trial(node, replicas)
                lags.append(lag)
                cpus.append(cpu)
                event_sizes.append(event_bytes)
            cpu = percentile(cpus, 0.5)
            print(
                f"N={replicas:<3} trials {len(lags):>3}  pod Ready -> every page written, ms:"
                f" p50 {percentile(lags, 0.5) * 1e3:6.1f}  p99 {percentile(lags, 0.99) * 1e3:6.1f}"
                f"  max {max(lags) * 1e3:6.1f};  API server CPU per pod added p50"
                f" {cpu * 1e3:5.0f} ms ({cpu / replicas * 1e3:5.2f} ms per sidecar);"
                f" an EndpointSlice event to one watcher p50 {percentile(event_sizes, 0.5):5.0f} B",
                flush=True,
            )
    finally:
        node.kubectl("delete", "-k", str(overlay), "--wait=true", "--timeout=300s")


def main() -> int:
    """Bring the three nodes up, run the trials, take it all down."""
    parser = argparse.ArgumentParser(prog="tox -e bench-cluster", description=__doc__)
    parser.add_argument("--sizes", default="10,30,100", help="pod counts N, comma separated")
    parser.add_argument("--trials", type=int, default=10, help="scale-ups by one pod per N")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="podlister-bench-cluster-") as tmp:
        root = Path(tmp)
        # In the main thread: the nodes' namespaces live as long as the thread that made them.
        with Node(root / "node", workers=POOL_WORKERS) as node:
            print(f"nodes Ready: {node.timings}", flush=True)
            run(node, root, sizes, args.trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
