"""Pods as real processes: for each, an nginx on P.N:8080 and a sidecar on P.N:8081, where P is
this run's own block of loopback addresses (``ports.pod_network()``).

The lifecycle mirrors Kubernetes: a new pod's sidecar starts first (native sidecar), nginx starts
once the sidecar's startup probe passes, the pod turns ready in the EndpointSlice once nginx's
readiness passes, and only then does the load balancer send it traffic. A removed pod is marked
terminating and taken out of the load balancer before nginx drains and stops.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
from pathlib import Path

from kubestub import ApiStandIn, endpoint, endpoint_slice
from support.loadbalancer import LoadBalancer
from support.nginx_runner import NginxPod
from support.polling import wait_until
from support.ports import free_port, pod_network
from support.sidecar_process import SidecarProcess, write_kubeconfig

SERVICE = "podlister"
NAMESPACE = "podlister"
SLICE_CAPACITY = 100  # the EndpointSlice controller's default maxEndpointsPerSlice
DRAIN_SECONDS = 0.2  # the preStop sleep, scaled down


@dataclasses.dataclass
class Pod:
    """One pod: its address, folder and the two processes."""

    index: int
    ip: str
    folder: Path
    sidecar: SidecarProcess
    nginx: NginxPod
    state: str = "starting"  # starting, ready, terminating

    @property
    def name(self) -> str:
        """The pod name."""
        return f"podlister-{self.index}"

    @property
    def url(self) -> str:
        """The pod's own nginx."""
        return self.nginx.url


class ClusterClosingError(Exception):
    """stop() was called while pods were being added or removed."""


class LocalCluster:
    """The stand-in, the load balancer and the pods, all stopped by stop()."""

    def __init__(self, root: Path | None = None, *, lb_address: str | None = None) -> None:
        """Create the folders; start() brings up the API and the load balancer.

        Without a root, a temporary folder is made, and stop() removes it. Without an
        address, the load balancer listens on a free port of 127.0.0.1.
        """
        self.owns_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="podlister-cluster-"))
        self.root.mkdir(parents=True, exist_ok=True)
        # Set by stop(): a scale in progress (in another thread) gives up between pods.
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self.api = ApiStandIn(host="127.0.0.1", bookmark_interval=30)
        self.lb = LoadBalancer(self.root / "lb", lb_address or f"127.0.0.1:{free_port()}")
        self.network = pod_network()
        self.pods: dict[int, Pod] = {}
        self.kubeconfig = self.root / "kubeconfig"
        self.ready_at: dict[str, float] = {}

    def start(self) -> LocalCluster:
        """Start the API stand-in and the load balancer."""
        self.api.start()
        write_kubeconfig(self.kubeconfig, self.api.url)
        self.lb.start()
        self._sync_slices()
        return self

    def stop(self) -> None:
        """Stop every process this cluster started; remove the folder if it made it."""
        self.closing.set()
        with self._lock:  # a pod being added is in self.pods before its processes start
            pods = list(self.pods.values())
        for pod in pods:
            pod.nginx.stop(graceful=False)
            pod.sidecar.stop()
        self.lb.stop()
        self.api.stop()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- the EndpointSlice controller ----------------------------------------------------

    def _sync_slices(self) -> None:
        pods = sorted(
            (p for p in self.pods.values() if p.state != "starting"), key=lambda p: p.index
        )
        chunks = [pods[i : i + SLICE_CAPACITY] for i in range(0, len(pods), SLICE_CAPACITY)] or [[]]
        for number, chunk in enumerate(chunks):
            endpoints = [
                endpoint(
                    p.ip,
                    ready=p.state == "ready",
                    serving=p.state in {"ready", "terminating"},
                    terminating=p.state == "terminating",
                    pod=p.name,
                    node="local",
                    # Two zones, as a regional cluster spreads pods (topologySpreadConstraints).
                    zone=f"local-{'ab'[p.index % 2]}",
                )
                for p in chunk
            ]
            self.api.apply(
                endpoint_slice(
                    f"{SERVICE}-{number}", service=SERVICE, namespace=NAMESPACE, endpoints=endpoints
                )
            )
        for stale in self.api.objects("endpointslices", NAMESPACE)[len(chunks) :]:
            self.api.delete("endpointslices", stale["metadata"]["name"], NAMESPACE)

    def ready_ips(self) -> list[str]:
        """The addresses the pages must list now, in the sidecar's order."""
        return [
            p.ip for p in sorted(self.pods.values(), key=lambda p: p.index) if p.state == "ready"
        ]

    # ---- pods ---------------------------------------------------------------------------

    def add_pod(self) -> Pod:
        """Start a pod and make it ready; returns once the load balancer sends it traffic."""
        index = next(i for i in range(1, 255) if i not in self.pods)
        folder = self.root / f"pod-{index}"
        if folder.exists():
            shutil.rmtree(folder)
        ip = f"{self.network}{index}"
        nginx = NginxPod(folder, ip)
        sidecar = SidecarProcess(
            kubeconfig=self.kubeconfig,
            output_dir=nginx.html,
            log_path=folder / "logs" / "sidecar.log",
            service=SERVICE,
            namespace=NAMESPACE,
            health_addr=f"{ip}:8081",
            extra_env={"PODLISTER_POD_IP": ip, "PODLISTER_POD_NAME": f"podlister-{index}"},
        )
        pod = Pod(index=index, ip=ip, folder=folder, sidecar=sidecar, nginx=nginx)
        with self._lock:
            if self.closing.is_set():
                raise ClusterClosingError("the cluster is stopping")
            self.pods[index] = pod
            sidecar.start()
        # startupProbe of the native sidecar: nginx waits for the first page.
        # Bounds for a busy machine: several pods start at once on two loaded cores (the
        # demo beside a test suite took more than 10 s for an nginx to answer).
        wait_until(lambda: sidecar.probe("/readyz") == 200, timeout=60, what=f"{ip} sidecar ready")
        with self._lock:
            if self.closing.is_set():
                raise ClusterClosingError("the cluster is stopping")
            nginx.start()
        wait_until(lambda: nginx.status("/readyz") == 200, timeout=60, what=f"{ip} nginx ready")
        pod.state = "ready"
        self.ready_at[ip] = time.monotonic()
        self._sync_slices()
        self._sync_lb()
        return pod

    def _sync_lb(self) -> None:
        self.lb.set_backends([f"{p.ip}:8080" for p in self.pods.values() if p.state == "ready"])

    def remove_pod(self, pod: Pod) -> None:
        """Scale-down: terminating, out of the load balancer, drain, stop, gone."""
        pod.state = "terminating"
        self._sync_slices()
        self._sync_lb()
        time.sleep(DRAIN_SECONDS)  # the preStop sleep: in-flight requests finish
        pod.nginx.stop(graceful=True)
        pod.sidecar.stop()
        del self.pods[pod.index]
        self._sync_slices()

    def kill_pod(self, pod: Pod) -> None:
        """A crash: both processes die at once; the pod then leaves like any other."""
        pod.nginx.kill()
        if pod.sidecar.process is not None:
            pod.sidecar.process.kill()
            pod.sidecar.process.wait(timeout=10)
        del self.pods[pod.index]
        self._sync_slices()
        self._sync_lb()

    def scale_to(self, replicas: int) -> None:
        """Add or remove pods (newest first, as a ReplicaSet does) until there are this many."""
        while len(self.pods) < replicas:
            self.add_pod()
        while len(self.pods) > replicas:
            if self.closing.is_set():
                raise ClusterClosingError("the cluster is stopping")
            self.remove_pod(self.pods[max(self.pods)])

    # ---- what the pages say ------------------------------------------------------------

    def page_of(self, pod: Pod) -> list[str] | None:
        """The list a pod's nginx serves to curl, or None when it does not answer."""
        import urllib.request

        try:
            with urllib.request.urlopen(pod.url + "/", timeout=2) as response:  # noqa: S310
                body: bytes = response.read()
                return body.decode().split()
        except OSError:
            return None

    def converged(self) -> bool:
        """Every running pod serves exactly the ready set."""
        expected = self.ready_ips()
        return all(self.page_of(p) == expected for p in self.pods.values())

    def wait_converged(self, timeout: float = 10.0) -> float:
        """Seconds until every pod serves the ready set (bounded)."""
        started = time.monotonic()
        wait_until(
            self.converged, timeout=timeout, interval=0.005, what="every pod serves the ready set"
        )
        return time.monotonic() - started
