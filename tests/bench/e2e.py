"""End-to-end benchmark on the local cluster: ``tox -e bench-e2e``.

For N = 3, 10, 30 replicas: an endpoint turns ready in the EndpointSlice -> every one of the N
replicas serves a list that includes it (read from each pod's served file; nginx serves it
without caching). Side by side, on the same changes:
  - the old design: one job lists the endpoints every INTERVAL and rewrites one shared page
    (60 s in the old CronJob; scaled down here and reported as such);
  - the floor: a bare watch client that only receives the event (no render, no write).
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

from bench.stats import summary
from kubestub import endpoint, endpoint_slice
from localcluster.cluster import NAMESPACE, SERVICE, LocalCluster

if TYPE_CHECKING:
    from pathlib import Path

NEWCOMER = "127.0.1.250"  # an address that turns ready and leaves again, trial after trial


class BareWatch(threading.Thread):
    """The floor: a raw chunked watch that notes when an event naming NEWCOMER arrives."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = urllib.parse.urlsplit(url)
        self.seen = threading.Event()
        self.at = 0.0

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.url.netloc, timeout=600)
        selector = urllib.parse.quote(f"kubernetes.io/service-name={SERVICE}")
        path = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
        conn.request("GET", f"{path}?watch=true&labelSelector={selector}&resourceVersion=0")
        response = conn.getresponse()
        try:
            for line in response:
                if NEWCOMER.encode() in line and b'"ready":true' in line.replace(b" ", b""):
                    self.at = time.monotonic()
                    self.seen.set()
                    return
        except OSError:
            return  # the stand-in closed the stream at the end of the run


class OldJob(threading.Thread):
    """The old design: list every interval, rewrite one shared page (the S3 object)."""

    def __init__(self, api_url: str, page: Path, interval: float) -> None:
        super().__init__(daemon=True)
        self.api_url, self.page, self.interval = api_url, page, interval
        self.stop = threading.Event()

    def run(self) -> None:
        url = f"{self.api_url}/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
        while not self.stop.wait(self.interval):
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                items = json.loads(response.read())["items"]
            ready = [
                a
                for item in items
                for e in item.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready") is not False
                for a in e["addresses"]
            ]
            tmp = self.page.with_suffix(".tmp")
            tmp.write_text("\n".join(ready) + "\n")
            tmp.replace(self.page)


def set_newcomer(cluster: LocalCluster, *, ready: bool) -> None:
    """Add or remove NEWCOMER in its own slice, as the controller would for a new pod."""
    if ready:
        eps = [endpoint(NEWCOMER, ready=True, pod="podlister-newcomer", node="local")]
        cluster.api.apply(
            endpoint_slice("podlister-extra", service=SERVICE, namespace=NAMESPACE, endpoints=eps)
        )
    else:
        cluster.api.delete("endpointslices", "podlister-extra", NAMESPACE)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def wait_all(files: list[Path], *, present: bool, timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    pending = list(files)
    while pending and time.monotonic() < deadline:
        pending = [f for f in pending if (NEWCOMER in _text(f)) != present]
        if pending:
            time.sleep(0.0005)
    if pending:
        raise TimeoutError(pending[0])
    return time.monotonic()


def bench(replicas: int, trials: int, interval: float) -> None:
    cluster = LocalCluster().start()
    try:
        cluster.scale_to(replicas)
        files = [p.nginx.html / "index.txt" for p in cluster.pods.values()]
        job_page = cluster.root / "bucket-index.txt"
        job = OldJob(cluster.api.url, job_page, interval)
        job.start()
        sidecar, floor, old = [], [], []
        for _ in range(trials):
            watch = BareWatch(cluster.api.url)
            watch.start()
            time.sleep(0.2)
            sent = time.monotonic()
            set_newcomer(cluster, ready=True)
            sidecar.append(wait_all(files, present=True) - sent)
            watch.seen.wait(10)
            floor.append(watch.at - sent)
            old.append(wait_all([job_page], present=True, timeout=interval * 3) - sent)
            set_newcomer(cluster, ready=False)
            wait_all(files, present=False)
            wait_all([job_page], present=False, timeout=interval * 3)
            time.sleep(0.15)
        job.stop.set()
        print(f"N={replicas:>2}  sidecars, all replicas  {summary(sidecar)}")
        print(f"      bare watch (floor)     {summary(floor)}")
        print(f"      old job every {interval:g} s   {summary(old)}   (60 s in the old CronJob)")
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="old job interval, seconds")
    parser.add_argument("--replicas", type=int, nargs="*", default=[3, 10, 30])
    args = parser.parse_args()
    print("pod ready -> served by every replica; times in ms")
    for replicas in args.replicas:
        bench(replicas, args.trials, args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
