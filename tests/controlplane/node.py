"""A node for the real control plane: pods become real nginx and sidecar processes.

``ProcessNode`` plays the scheduler and the kubelet for one namespace: it binds every new
pod to its Node, starts the pod's sidecar and nginx as processes, reports the pod's IP and
readiness the way the kubelet does, and on deletion runs the preStop pause, stops both
and confirms the deletion. ``ServiceProxy`` plays kube-proxy for the load balancer: it
sends traffic to the ready endpoints of the Service's EndpointSlices.

Addresses: the API refuses loopback addresses in EndpointSlices, and the tests may only
listen on loopback. So a pod's IP as the API knows it is 10.244.0.N, and the node runs the
pod's processes on P.N, P being this run's block of loopback addresses (``ports.pod_network``):
the one translation, done here and in the proxy alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import threading
import urllib.request
from typing import TYPE_CHECKING, Any

from controlplane import kubelet
from controlplane.rest import ApiError
from support.nginx_runner import NginxPod
from support.polling import wait_until
from support.ports import pod_network
from support.sidecar_process import SidecarProcess

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from controlplane.cluster import ControlPlane
    from support.loadbalancer import LoadBalancer

POD_NETWORK = "10.244.0."
SYNC_INTERVAL = 0.05  # seconds between two looks at the API (the kubelet's watch, polled)
PRE_STOP_SECONDS = 0.2  # the manifest's preStop sleep (5 s), scaled down


def loopback_of(pod_ip: str) -> str:
    """Where the node runs the pod whose API address is pod_ip."""
    return pod_network() + pod_ip.removeprefix(POD_NETWORK)


@dataclasses.dataclass
class RunningPod:
    """A pod this node runs: its API name and IP, and its two processes."""

    name: str
    ip: str
    sidecar: SidecarProcess
    nginx: NginxPod
    ready: bool = False
    terminating: bool = False


class ProcessNode:
    """Runs the pods of one namespace as processes until stop()."""

    def __init__(self, plane: ControlPlane, root: Path, namespace: str) -> None:
        """Nothing runs before start()."""
        self.plane, self.root, self.namespace = plane, root, namespace
        self.pods: dict[str, RunningPod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node", daemon=True)
        self._workers: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def start(self) -> ProcessNode:
        """Register the Node and start following the namespace's pods."""
        kubelet.register_node(self.plane.rest)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following, then stop every pod's processes (by pid)."""
        self._stop.set()
        self._thread.join(timeout=30)
        for worker in self._workers:
            worker.join(timeout=30)
        with self._lock:
            for pod in self.pods.values():
                pod.nginx.stop(graceful=False)
                pod.sidecar.stop()
            self.pods.clear()

    def check(self) -> None:
        """Raise what went wrong in the node's thread, if anything did."""
        if self._errors:
            raise self._errors[0]

    def running(self) -> list[RunningPod]:
        """The pods this node runs and is not stopping."""
        with self._lock:
            return [pod for pod in self.pods.values() if not pod.terminating]

    def ready_ips(self) -> list[str]:
        """API addresses of the pods this node reports ready, in the sidecar's order."""
        with self._lock:
            ips = [pod.ip for pod in self.pods.values() if pod.ready]
        return sorted(ips, key=lambda ip: tuple(int(part) for part in ip.split(".")))

    # ---- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(SYNC_INTERVAL):
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - reported to the test through check()
                self._errors.append(exc)
                return

    def _sync(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        seen = set()
        for pod in self.plane.rest.get(path)["items"]:
            name = pod["metadata"]["name"]
            seen.add(name)
            if "deletionTimestamp" in pod["metadata"]:
                self._terminate(name)
            elif not pod["spec"].get("nodeName"):
                kubelet.bind(self.plane.rest, self.namespace, name)
                self._start_pod(pod)
        with self._lock:
            gone = [name for name in self.pods if name not in seen]
        for name in gone:  # deleted with no grace period: nothing to confirm
            self._stop_processes(name)

    def _start_pod(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        with self._lock:
            used = {pod.ip for pod in self.pods.values()}
        index = next(i for i in range(1, 255) if f"{POD_NETWORK}{i}" not in used)
        ip = f"{POD_NETWORK}{index}"
        address = loopback_of(ip)
        folder = self.root / name
        shutil.rmtree(folder, ignore_errors=True)
        nginx = NginxPod(folder, address)
        sidecar = SidecarProcess(
            kubeconfig=self.plane.kubeconfig_for(
                folder / "token.kubeconfig", self.namespace, pod["spec"]["serviceAccountName"]
            ),
            output_dir=nginx.html,
            log_path=folder / "logs" / "sidecar.log",
            health_addr=f"{address}:8081",
            extra_env=self._sidecar_env(pod, ip, folder),
        )
        running = RunningPod(name=name, ip=ip, sidecar=sidecar, nginx=nginx)
        with self._lock:
            self.pods[name] = running
        # The kubelet gives the pod its IP before the containers start.
        kubelet.report(self.plane.rest, self.namespace, name, ip=ip, ready=False)
        self._spawn(self._bring_up, running)

    def _spawn(self, target: Callable[[RunningPod], None], pod: RunningPod) -> None:
        # Pods start and stop in parallel, as on a kubelet; each step's wait is bounded.
        worker = threading.Thread(target=self._reported, args=(target, pod), daemon=True)
        self._workers.append(worker)
        worker.start()

    def _reported(self, target: Callable[[RunningPod], None], pod: RunningPod) -> None:
        try:
            target(pod)
        except Exception as exc:  # noqa: BLE001 - reported to the test through check()
            self._errors.append(exc)

    def _sidecar_env(self, pod: dict[str, Any], ip: str, folder: Path) -> dict[str, str]:
        """The sidecar container's env as the manifest gives it, resolved like the kubelet."""
        container = next(c for c in pod["spec"]["initContainers"] if c["name"] == "sidecar")
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": self.namespace,
            "status.podIP": ip,
        }
        env = {}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        # Volumes and the pod's own network namespace, mapped onto this machine.
        template_dir = folder / "page-template"
        template_dir.mkdir(parents=True, exist_ok=True)
        env["PODLISTER_TEMPLATE_DIR"] = str(template_dir)
        env.pop("PODLISTER_OUTPUT_DIR", None)
        env.pop("PODLISTER_HEALTH_ADDR", None)
        return env

    def _bring_up(self, pod: RunningPod) -> None:
        pod.sidecar.start()
        # The native sidecar's startupProbe: nginx starts once the first page is there.
        wait_until(
            lambda: self._stop.is_set() or pod.sidecar.probe("/readyz") == 200,
            timeout=30,
            what=f"{pod.name}'s sidecar ready",
        )
        if self._stop.is_set():
            return
        pod.nginx.start()
        wait_until(lambda: pod.nginx.status("/readyz") == 200, timeout=10, what=pod.name)
        kubelet.report(self.plane.rest, self.namespace, pod.name, ip=pod.ip, ready=True)
        pod.ready = True

    def _terminate(self, name: str) -> None:
        with self._lock:
            pod = self.pods.get(name)
            if pod is None or pod.terminating:
                return
            pod.terminating, pod.ready = True, False
        self._spawn(self._shut_down, pod)

    def _shut_down(self, pod: RunningPod) -> None:
        # The EndpointSlice controller marks the pod terminating (not ready) by now; the
        # preStop pause lets the load balancer stop sending before nginx stops.
        self._stop.wait(PRE_STOP_SECONDS)
        self._stop_processes(pod.name)
        with contextlib.suppress(ApiError):  # already gone
            kubelet.delete(self.plane.rest, self.namespace, pod.name)

    def _stop_processes(self, name: str) -> None:
        with self._lock:
            pod = self.pods.pop(name, None)
        if pod is not None:
            pod.nginx.stop(graceful=True)
            pod.sidecar.stop()


class ServiceProxy:
    """Sends the load balancer's traffic to the Service's ready endpoints, as kube-proxy."""

    def __init__(self, plane: ControlPlane, lb: LoadBalancer, namespace: str, service: str) -> None:
        """Nothing runs before start()."""
        self.plane, self.lb = plane, lb
        self._path = (
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
            f"?labelSelector=kubernetes.io/service-name={service}"
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)

    def start(self) -> ServiceProxy:
        """Follow the slices in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following (the load balancer itself is its owner's to stop)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(SYNC_INTERVAL):
            backends = sorted(
                f"{loopback_of(address)}:8080"
                for item in self.plane.rest.get(self._path)["items"]
                for endpoint in item.get("endpoints") or []
                if (endpoint.get("conditions") or {}).get("ready") is not False
                for address in endpoint["addresses"]
            )
            if backends != sorted(self.lb.backends):
                self.lb.set_backends(backends)


def served(url: str) -> list[str] | None:
    """The addresses in the index.json served at url, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url + "/index.json", timeout=2) as response:  # noqa: S310
            return list(json.loads(response.read())["addresses"])
    except (OSError, ValueError):
        return None


def converged(node: ProcessNode, lb: LoadBalancer, replicas: int) -> bool:
    """Replicas pods are ready, the load balancer sends to exactly them, and it and each of
    them serve exactly their list.
    """
    node.check()
    ready = node.ready_ips()
    backends = sorted(f"{loopback_of(ip)}:8080" for ip in ready)
    if len(ready) != replicas or sorted(lb.backends) != backends or served(lb.url) != ready:
        return False
    return all(served(pod.nginx.url) == ready for pod in node.running())
