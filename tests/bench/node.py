"""Pod Ready -> every page lists it, on a real node: ``tox -e bench-node``.

The node of tests/node (kubelet, containerd, kube-proxy, the real control plane) runs the
local overlay, scaled to N - 1 pods. Each trial scales it to N: a streaming watch on the
pods notes when the new pod turns Ready (the moment its endpoint becomes ready), then every
page is read over and over from inside the node, the Service's (ClusterIP, port 80, a new
connection each time) and each Ready pod's own (its IP, port 8080, the new pod's included,
on a kept-alive connection), each until it lists the new pod's IP. Lag = the last page's
first listing - Ready. The trial then scales back to N - 1 and waits until every page lists
exactly the pods left. Printed per N: p50, p99 and max of the lags, and the longest round of
reads over the pages still waiting (the resolution).

Beside it, for the same changes, the programming latency as kube-proxy and the sidecars
export it (from each EndpointSlice's trigger time to the rules, or to the files): the
difference of kube-proxy's ``kubeproxy_network_programming_duration_seconds`` over the
size's trials, and the sidecars' ``podlister_network_programming_duration_seconds`` of the
pods present all along, pooled; mean (exact) and p50 / p99 (interpolated in the buckets, as
Prometheus's histogram_quantile does). The trigger time has whole seconds only.
"""

from __future__ import annotations

import argparse
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
from typing import TYPE_CHECKING, Any

from bench.stats import percentile
from controlplane.cluster import ADMIN_TOKEN
from node.cluster import Node
from node.overlay import image_overlay
from node.pods import NAMESPACE, SELECTOR, cluster_ip, is_ready, pods, ready_ips
from support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

TRIAL_TIMEOUT = 120.0


class ReadyWatch:
    """A watch on the pods: when (monotonic) each pod IP was first seen Ready."""

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
        now = time.monotonic()
        with self._noted:
            for pod in pods:
                ip = pod.get("status", {}).get("podIP")
                if ip and is_ready(pod):
                    self.ready_at.setdefault(ip, now)
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


class PageReader:
    """Reads one pod's page over and over on one kept-alive connection made inside the node
    (nginx keeps it open), so that a read costs a request, not a connection.
    """

    def __init__(self, node: Node, host: str, port: int) -> None:
        """Nothing is opened before the first read."""
        assert node.dialer is not None
        dialer = node.dialer

        class Inside(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = dialer.connect((self.host, self.port), timeout=2)

        self._connection = Inside(host, port, timeout=2)

    def listed(self) -> set[str] | None:
        """The addresses index.txt lists now, None if it did not answer 200."""
        try:
            self._connection.request("GET", "/index.txt")
            response = self._connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            return None
        return set(body.decode().split()) if response.status == 200 else None

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


def listed(node: Node, host: str, port: int) -> set[str] | None:
    """The addresses index.txt lists at host:port (node.http: a new connection, so that
    kube-proxy routes a read of the Service anew), None if it did not answer 200.
    """
    try:
        answer = node.http(host, port, "/index.txt", timeout=2)
    except OSError:
        return None
    return set(answer.text().split()) if answer.status == 200 else None


def pages(service_ip: str, ips: set[str]) -> list[tuple[str, int]]:
    """The Service's page and every given pod's own page."""
    return [(service_ip, 80), *((ip, 8080) for ip in sorted(ips))]


def scale(node: Node, replicas: int) -> None:
    """Kubectl scale, as a user types it."""
    done = node.kubectl("-n", NAMESPACE, "scale", "deployment/podlister", f"--replicas={replicas}")
    assert done.returncode == 0, done.stderr


def settle(node: Node, service_ip: str, replicas: int) -> None:
    """Until replicas pods are Ready, no other pod is left, and every page lists exactly them."""

    def settled() -> bool:
        found = pods(node)
        ips = {pod["status"]["podIP"] for pod in found if is_ready(pod)}
        if len(ips) != replicas or len(found) != replicas:
            return False
        return all(listed(node, *page) == ips for page in pages(service_ip, ips))

    wait_until(settled, timeout=300, interval=0.5, what=f"{replicas} pods listed everywhere")


def trial(node: Node, service_ip: str, replicas: int) -> tuple[float, float]:
    """Scale replicas - 1 -> replicas; (lag of the last page after Ready, one read round)."""
    before = set(ready_ips(node))
    readers: dict[str, PageReader] = {}
    watch = ReadyWatch(node)
    try:
        deadline = time.monotonic() + TRIAL_TIMEOUT
        scale(node, replicas)
        new_ip, ready_at = watch.new_ready(before, TRIAL_TIMEOUT)
        readers.update((ip, PageReader(node, ip, 8080)) for ip in before | {new_ip})
        pending: dict[str, Callable[[], set[str] | None]] = {
            "the Service": lambda: listed(node, service_ip, 80),
            **{ip: reader.listed for ip, reader in readers.items()},
        }
        seen: list[float] = []
        rounds: list[float] = []
        while pending:
            assert time.monotonic() < deadline, f"{new_ip} not listed by {sorted(pending)}"
            started = time.monotonic()
            for page, read in list(pending.items()):
                found = read()
                if found is not None and new_ip in found:
                    seen.append(time.monotonic())
                    del pending[page]
            rounds.append(time.monotonic() - started)
    finally:
        watch.stop()
        for reader in readers.values():
            reader.close()
    return max(seen) - ready_at, max(rounds)


Histogram = dict[float, float]  # upper bound -> cumulative count ("+Inf" as inf)

KUBE_PROXY_METRICS = ("127.0.0.1", 10249)
KUBE_PROXY_LATENCY = "kubeproxy_network_programming_duration_seconds"
SIDECAR_LATENCY = "podlister_network_programming_duration_seconds"


def histogram(text: str, name: str) -> tuple[Histogram, float]:
    """The cumulative buckets and the sum of a histogram in /metrics text (labels pooled)."""
    buckets: Histogram = {}
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            key = float("inf") if bound == "+Inf" else float(bound)
            buckets[key] = buckets.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return buckets, total


def minus(
    after: tuple[Histogram, float], before: tuple[Histogram, float]
) -> tuple[Histogram, float]:
    """What was observed between two readings of one histogram."""
    return {k: v - before[0].get(k, 0.0) for k, v in after[0].items()}, after[1] - before[1]


def plus(one: tuple[Histogram, float], other: tuple[Histogram, float]) -> tuple[Histogram, float]:
    """Two histograms of the same buckets pooled."""
    keys = set(one[0]) | set(other[0])
    return {k: one[0].get(k, 0.0) + other[0].get(k, 0.0) for k in keys}, one[1] + other[1]


def quantile(buckets: Histogram, fraction: float) -> float:
    """histogram_quantile: linear within the bucket the rank falls in."""
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    rank, lower, below = fraction * count, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, buckets[bound]
    return lower


def latencies(node: Node, ips: set[str]) -> tuple[tuple[Histogram, float], dict[str, Any]]:
    """kube-proxy's histogram now, and each given pod's sidecar's."""
    proxy = histogram(node.http(*KUBE_PROXY_METRICS, "/metrics").text(), KUBE_PROXY_LATENCY)
    sidecars = {
        ip: histogram(node.http(ip, 8081, "/metrics").text(), SIDECAR_LATENCY) for ip in ips
    }
    return proxy, sidecars


def compare(before: tuple[Any, dict[str, Any]], after: tuple[Any, dict[str, Any]]) -> None:
    """One line each for kube-proxy and the sidecars, over what was observed between."""
    proxy = minus(after[0], before[0])
    kept = sorted(set(before[1]) & set(after[1]))
    pooled: tuple[Histogram, float] = ({}, 0.0)
    for ip in kept:
        pooled = plus(pooled, minus(after[1][ip], before[1][ip]))
    for who, (buckets, total) in (("kube-proxy", proxy), (f"{len(kept)} sidecars", pooled)):
        count = buckets.get(float("inf"), 0.0)
        if not count:
            print(f"  programming latency, {who}: nothing observed", flush=True)
            continue
        p50, p99 = quantile(buckets, 0.5) * 1e3, quantile(buckets, 0.99) * 1e3
        print(
            f"  programming latency, {who}: n {count:4.0f}  mean {total / count * 1e3:7.1f} ms"
            f"  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms",
            flush=True,
        )


def report(replicas: int, lags: list[float], rounds: list[float]) -> None:
    """One line per N."""
    print(
        f"N={replicas:<3} trials {len(lags):>3}  pod Ready -> every page lists it, ms:"
        f" p50 {percentile(lags, 0.5) * 1e3:7.1f}  p99 {percentile(lags, 0.99) * 1e3:7.1f}"
        f"  max {max(lags) * 1e3:7.1f}  (longest round of reads:"
        f" p50 {percentile(rounds, 0.5) * 1e3:5.1f} ms)",
        flush=True,
    )


def run(node: Node, root: Path, sizes: list[int], trials: int) -> None:
    """Apply the local overlay, then the trials per size; the overlay deleted at the end."""
    overlay = image_overlay(root / "local", "local", node.image_refs)
    applied = node.kubectl("apply", "-k", str(overlay))
    assert applied.returncode == 0, applied.stderr
    try:
        service_ip = cluster_ip(node)
        for replicas in sizes:
            lags, rounds = [], []
            scale(node, replicas - 1)
            settle(node, service_ip, replicas - 1)
            before = latencies(node, set(ready_ips(node)))
            for _ in range(trials):
                scale(node, replicas - 1)
                settle(node, service_ip, replicas - 1)
                lag, read_round = trial(node, service_ip, replicas)
                lags.append(lag)
                rounds.append(read_round)
            report(replicas, lags, rounds)
            compare(before, latencies(node, set(ready_ips(node))))
    finally:
        node.kubectl("delete", "-k", str(overlay), "--wait=true", "--timeout=180s")


def main() -> int:
    """Bring a node up, run the trials, take it all down."""
    parser = argparse.ArgumentParser(prog="python -m bench.node", description=__doc__)
    parser.add_argument("--sizes", default="10,30", help="pod counts N, comma separated")
    parser.add_argument("--trials", type=int, default=10, help="scale-ups per N")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="podlister-bench-node-") as tmp:
        root = Path(tmp)
        # In the main thread: the node's namespaces live as long as the thread that made them.
        with Node(root / "node") as node:
            print(f"node Ready: {node.timings}", flush=True)
            run(node, root, sizes, args.trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
