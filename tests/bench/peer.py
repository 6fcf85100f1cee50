"""The sidecar beside a client-go peer: ``tox -e bench-peer``.

tests/peer is a Go program of ~200 lines: client-go's SharedInformer on the Service's
EndpointSlices, the sidecar's membership rules, the same three files (index.txt byte-identical,
index.json with the same membership keys and values, a plain index.html). Both run at once
against the same API, on the project's stand-in and on the real control plane, at 10, 1,000
and 10,000 endpoints (100 per slice). On the stand-in both read a kubeconfig; on the control
plane both read their credentials as in a pod (in-cluster: KUBERNETES_SERVICE_HOST/PORT, and
the token and CA at /var/run/secrets/kubernetes.io/serviceaccount, a tmpfs in a mount
namespace of their own), which is the path the sidecar takes in production. For each size:
process start -> first index.html (each started alone), then isolated changes (one endpoint
flips readiness; both watch the same change) -> each one's new index.html, then RSS and CPU
over an idle period. Printed per figure: sidecar, peer, ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench.sidecar import SHM, slices
from bench.stats import percentile
from controlplane.cluster import ADMIN_TOKEN, ControlPlane
from controlplane.rest import ApiError
from kubestub import ApiStandIn
from support import verified_cache as cache
from support.ports import free_port
from support.procstat import cpu_seconds, rss_kib
from support.sidecar_process import SidecarProcess, write_kubeconfig

if TYPE_CHECKING:
    from collections.abc import Iterator

PEER_SOURCE = Path(__file__).parent.parent / "peer"
NAMESPACE = "default"
SERVICE = "web"
# Our own manager label: the real EndpointSlice controller leaves such slices alone.
MANAGED_BY = "bench.podlister"
# Keys whose values both write the same way (the rest: time, identity, history).
SHARED_KEYS = ("service", "namespace", "addresses", "members", "terminating", "not_ready")


def build_peer() -> Path:
    """Go build tests/peer into the user cache, keyed by its sources; the binary."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((PEER_SOURCE / name).read_bytes())

    def fill(staging: Path) -> None:
        subprocess.run(
            ["go", "build", "-trimpath", "-o", str(staging / "peer"), "."],
            cwd=PEER_SOURCE,
            check=True,
        )

    return cache.filled(cache.root() / f"peer-{digest.hexdigest()[:12]}", fill) / "peer"


# Runs a command with /run (so /var/run) a tmpfs of its own holding the service account's
# files, as the kubelet mounts them; unshare (no --fork) and sh exec, so the pid is the
# command's, and the mount ends with it.
IN_A_POD = (
    "mount -t tmpfs -o size=1m,mode=0755 podlister-bench /run"
    " && mkdir -p /run/secrets/kubernetes.io/serviceaccount"
    ' && cp "$0"/token "$0"/ca.crt "$0"/namespace /run/secrets/kubernetes.io/serviceaccount/'
    ' && exec "$@"'
)


class Feed(Protocol):
    """Where the EndpointSlices live: the stand-in or the real API server."""

    kubeconfig: Path | None  # None: credentials in-cluster, as in a pod
    env: dict[str, str]
    prefix: list[str]

    def apply(self, obj: dict[str, Any]) -> None:
        """Create or replace one EndpointSlice."""


class StandInFeed:
    """The project's API stand-in."""

    def __init__(self, api: ApiStandIn, root: Path) -> None:
        self.api = api
        self.kubeconfig: Path | None = write_kubeconfig(root / "standin.kubeconfig", api.url)
        self.env: dict[str, str] = {}
        self.prefix: list[str] = []

    def apply(self, obj: dict[str, Any]) -> None:
        self.api.apply(obj)


class PlaneFeed:
    """The real kube-apiserver (and etcd) built from Go modules."""

    def __init__(self, plane: ControlPlane, root: Path) -> None:
        self.plane = plane
        self.kubeconfig: Path | None = None
        account = root / "serviceaccount"
        account.mkdir()
        (account / "token").write_text(ADMIN_TOKEN, encoding="utf-8")
        (account / "ca.crt").write_bytes(plane.ca_file.read_bytes())
        (account / "namespace").write_text(NAMESPACE, encoding="utf-8")
        self.env = {
            "KUBERNETES_SERVICE_HOST": plane.host,
            "KUBERNETES_SERVICE_PORT": str(plane.port),
        }
        self.prefix = ["unshare", "--mount", "--propagation", "private", "--"]
        self.prefix += ["sh", "-c", IN_A_POD, str(account)]

    def apply(self, obj: dict[str, Any]) -> None:
        base = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
        try:
            self.plane.rest.request("PUT", f"{base}/{obj['metadata']['name']}", obj)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.plane.rest.post(base, obj)


def labelled(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objects:
        obj["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = MANAGED_BY
    return objects


class Watcher:
    """One of the two programs, its output folder and its process."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], out: Path) -> None:
        self.name, self.process, self.out = name, process, out
        self.page = out / "index.html"

    def inode(self) -> int:
        try:
            return self.page.stat().st_ino
        except FileNotFoundError:
            return -1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_sidecar(feed: Feed, root: Path, tag: str) -> Watcher:
    out = root / f"sidecar-{tag}"
    out.mkdir()
    sidecar = SidecarProcess(
        # In-cluster, the kubeconfig is not read: KUBERNETES_SERVICE_HOST comes first.
        kubeconfig=feed.kubeconfig or root / "unused.kubeconfig",
        output_dir=out,
        log_path=root / f"sidecar-{tag}.log",
        service=SERVICE,
        namespace=NAMESPACE,
        health_addr=f"127.0.0.1:{free_port()}",
        extra_env={"PODLISTER_IDLE_TIMEOUT": "90", **feed.env},
        command_prefix=feed.prefix,
    ).start()
    assert sidecar.process is not None
    return Watcher("sidecar", sidecar.process, out)


def start_peer(binary: Path, feed: Feed, root: Path, tag: str) -> Watcher:
    out = root / f"peer-{tag}"
    out.mkdir()
    with (root / f"peer-{tag}.log").open("ab") as log:
        environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        process = subprocess.Popen(
            [
                *feed.prefix,
                str(binary),
                # Empty: client-go's BuildConfigFromFlags falls back to in-cluster.
                f"--kubeconfig={feed.kubeconfig or ''}",
                f"--namespace={NAMESPACE}",
                f"--service={SERVICE}",
                f"--output={out}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # List and watch, as the sidecar does (not the streaming list of newer servers).
            env={**environ, **feed.env, "KUBE_FEATURE_WatchListClient": "false"},
        )
    return Watcher("peer", process, out)


def wait_replaced(watchers: dict[Watcher, int], timeout: float = 20.0) -> dict[str, float]:
    """Poll (0.2 ms) until each watcher's index.html has a new inode; when each was seen."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(watchers):
        if time.monotonic() > deadline:
            missing = [w.name for w in watchers if w.name not in seen]
            raise TimeoutError(f"no new index.html from {missing}")
        for watcher, inode in watchers.items():
            if watcher.name not in seen and watcher.inode() != inode:
                seen[watcher.name] = time.monotonic()
        time.sleep(0.0002)
    return seen


def same_content(sidecar: Watcher, peer: Watcher) -> None:
    """index.txt byte-identical; index.json the same for every membership key."""
    text = (sidecar.out / "index.txt").read_bytes()
    if text != (peer.out / "index.txt").read_bytes():
        raise AssertionError("index.txt differs between the sidecar and the peer")
    ours = json.loads((sidecar.out / "index.json").read_bytes())
    theirs = json.loads((peer.out / "index.json").read_bytes())
    for key in SHARED_KEYS:
        if ours[key] != theirs[key]:
            raise AssertionError(f"index.json's {key} differs between the sidecar and the peer")


def run(
    binary: Path, feed: Feed, root: Path, *, total: int, changes: int, idle: float
) -> dict[str, Any]:
    """Every figure for one size, for both programs."""
    tag = f"{type(feed).__name__}-{total}"
    for obj in labelled(slices(total, None)):
        feed.apply(obj)
    figures: dict[str, Any] = {"first": {}, "latency": {"sidecar": [], "peer": []}}
    watchers = []
    try:
        for start in ("sidecar", "peer"):
            started = time.monotonic()
            watcher = (
                start_sidecar(feed, root, tag)
                if start == "sidecar"
                else start_peer(binary, feed, root, tag)
            )
            watchers.append(watcher)
            figures["first"][start] = wait_replaced({watcher: -1}, 60)[start] - started
        flip = True
        for _ in range(changes):
            time.sleep(0.15)  # isolated: beyond the sidecar's 100 ms write interval
            before = {w: w.inode() for w in watchers}
            obj = labelled(slices(min(total, 100), 0 if flip else None))[0]
            flip = not flip
            sent = time.monotonic()
            feed.apply(obj)
            for name, at in wait_replaced(before).items():
                figures["latency"][name].append(at - sent)
        time.sleep(0.3)  # the last writes of both are complete
        same_content(*watchers)
        figures["rss"] = {w.name: rss_kib(w.process.pid) / 1024 for w in watchers}
        if idle:
            before_cpu = {w.name: cpu_seconds(w.process.pid) for w in watchers}
            time.sleep(idle)
            figures["idle"] = {
                w.name: (cpu_seconds(w.process.pid) - before_cpu[w.name]) / idle * 1000
                for w in watchers
            }
    finally:
        for watcher in watchers:
            watcher.stop()
    return figures


def rows(figures: dict[str, Any]) -> Iterator[tuple[str, float, float]]:
    latency = figures["latency"]
    yield (
        "start -> first file, ms",
        figures["first"]["sidecar"] * 1e3,
        figures["first"]["peer"] * 1e3,
    )
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        yield (
            f"change -> files {name}, ms",
            percentile(latency["sidecar"], fraction) * 1e3,
            percentile(latency["peer"], fraction) * 1e3,
        )
    yield "RSS, MiB", figures["rss"]["sidecar"], figures["rss"]["peer"]
    if "idle" in figures:
        yield "idle CPU, mCPU", figures["idle"]["sidecar"], figures["idle"]["peer"]


def report(where: str, total: int, figures: dict[str, Any]) -> None:
    for label, ours, theirs in rows(figures):
        ratio = f"{ours / theirs:6.2f}" if theirs else "     -"
        print(
            f"{where:<13} {total:>6}  {label:<26} sidecar {ours:9.2f}  peer {theirs:9.2f}"
            f"  ratio {ratio}",
            flush=True,
        )


def main() -> int:
    """Build the peer, run both side by side, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("--changes", type=int, default=40, help="isolated changes per size")
    parser.add_argument("--sizes", default="10,1000,10000", help="endpoint counts, comma separated")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU sampling")
    parser.add_argument(
        "--where", default="standin,controlplane", help="standin, controlplane or both"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    binary = build_peer()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; n={args.changes}")
    root_dir = SHM if SHM.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="podlister-peer-", dir=root_dir) as tmp:
        root = Path(tmp)
        if "standin" in args.where:
            for total in sizes:
                with ApiStandIn(bookmark_interval=60) as api:
                    feed = StandInFeed(api, root)
                    figures = run(
                        binary, feed, root, total=total, changes=args.changes, idle=args.idle
                    )
                    report("stand-in", total, figures)
        if "controlplane" in args.where:
            with ControlPlane(root / "controlplane") as plane:
                plane_feed = PlaneFeed(plane, root)
                for total in sizes:
                    figures = run(
                        binary, plane_feed, root, total=total, changes=args.changes, idle=args.idle
                    )
                    report("control plane", total, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
