"""A real cluster in namespaces of its own: node-1 with the control plane, kube-scheduler,
metrics-server and MetalLB's load balancer, and on every node (node-1 and the workers asked
for) containerd with the CNI bridge, the kubelet, kube-proxy and kube-router's NetworkPolicy
enforcer (``node.machine``); and a machine outside the cluster.

Inside the cluster's network namespaces addresses are fixed and private to them: node-k is
10.200.0.k on a bridge the test makes in node-1 (the VPC; the other nodes join it by veth),
its pods get 10.244.<k-1>.0/24 from its CNI bridge, Services 10.96.0.0/16, load balancer IPs
10.200.0.240/28 on the bridge, the registry listens on node-1's port 5000.
``Node.outside`` stands for a user's machine: namespaces of their own with 10.200.0.100 on
the VPC bridge, and nothing of the cluster's but what its network lets through. Two suites
each have their own.
The host reaches the API server through a loopback forward (``Node.controlplane.rest``,
``kubectl``), and anything else with ``Node.namespaces`` or ``Node.http``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import subprocess
import time
from typing import TYPE_CHECKING, Any, Self

from controlplane.build import build
from controlplane.cluster import SERVICE_CIDR, ControlPlane
from node import enforcer, host, images, loadbalancer, machine
from node.machine import REGISTRY, Machine, machine_named
from node.namespace import Dialer, Forward, Namespaces
from support.lifecycle import Lifecycle
from support.polling import wait_until

if TYPE_CHECKING:
    from pathlib import Path

NODE_NAME, NODE_IP, _ = machine_named(1)
OUTSIDE_IP = "10.200.0.100"
# Locally administered (02:...), then node-1's address: 10.200.0.1.
BRIDGE_MAC = "02:00:0a:c8:00:01"
LOAD_BALANCER_POOL = "10.200.0.240/28"
REGISTRY_PORT = int(REGISTRY.rsplit(":", 1)[1])
# Workers beside node-1 in the tests and `tox -e cluster`: a DOKS node pool starts at three.
POOL_WORKERS = 2
# Node.http's name for the machine outside the cluster.
OUTSIDE = "outside"
API_PORT = 6443
METRICS_PORT = 4443
START_TIMEOUT = 120.0


class HttpAnswer:
    """Status, headers and body of one answer from inside the node."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Keep what the server sent."""
        self.status, self.headers, self.body = status, headers, body

    def text(self) -> str:
        """The body as text."""
        return self.body.decode()

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class _InsideConnection(http.client.HTTPConnection):
    def __init__(self, dialer: Dialer, host_name: str, port: int, timeout: float) -> None:
        super().__init__(host_name, port, timeout=timeout)
        self._dialer = dialer

    def connect(self) -> None:
        self.sock = self._dialer.connect((self.host, self.port), timeout=self.timeout or 5)


def http_get(
    dialer: Dialer, host_name: str, port: int, path: str = "/", *, timeout: float = 5
) -> HttpAnswer:
    """One GET from inside the dialer's network namespace (a new connection each time)."""
    connection = _InsideConnection(dialer, host_name, port, timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        return HttpAnswer(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


class Node(Lifecycle):
    """The whole cluster (node-1, and workers more nodes); start() brings it up (building
    what is missing), stop() takes it all down and puts the host back as it was.
    """

    def __init__(self, workdir: Path, *, workers: int = 0) -> None:
        """Paths only; nothing runs before start()."""
        self.workdir = workdir
        self.cgroup_root = f"podlister-node-{secrets.token_hex(4)}"
        self.workers = workers
        self.machines: list[Machine] = []
        self.namespaces: Namespaces | None = None
        self.outside: Namespaces | None = None
        self.dialer: Dialer | None = None
        self._dialers: dict[str, Dialer] = {}
        self._binaries: Path | None = None
        self._forwards: list[Forward] = []
        self.controlplane: ControlPlane | None = None
        self.image_refs: dict[str, str] = {}
        self._holding_sysctls = False
        # The sysctls the kubelet changes, as the host had them before any run's node: what
        # the last node out writes back (another run's node may be up when this one starts).
        self.sysctls_found: dict[str, str] = {}
        self._registry_process: subprocess.Popen[bytes] | None = None
        self.timings: dict[str, float] = {}
        self._enforcer: Path | None = None
        self._metallb: Path | None = None

    # ---- the way in ----------------------------------------------------------------------

    def http(
        self,
        host_name: str,
        port: int,
        path: str = "/",
        *,
        timeout: float = 5,
        on: str = NODE_NAME,
    ) -> HttpAnswer:
        """One GET from inside a node's network namespace, node-1's unless on names another
        node or OUTSIDE (a new connection each time). The NetworkPolicy lets a pod's own node
        (its kubelet) in where it refuses the other nodes.
        """
        return http_get(self._dialers[on], host_name, port, path, timeout=timeout)

    def forward(self, host_name: str, port: int, *, on: str = NODE_NAME) -> Forward:
        """A loopback port of the host leading to host_name:port as seen from the node named
        on (or OUTSIDE); closed at stop().
        """
        forward = Forward(self._dialers[on], (host_name, port))
        self._forwards.append(forward)
        return forward

    def kubectl(
        self, *args: str, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Kubectl inside the node, as a user on it types it (the admin kubeconfig)."""
        assert self.namespaces is not None
        assert self.controlplane is not None
        return subprocess.run(
            self.namespaces.command(
                "kubectl", f"--kubeconfig={self.controlplane.inner_kubeconfig}", *args, mount=False
            ),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # ---- up and down ---------------------------------------------------------------------

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)

    def _start(self) -> Self:
        """Build and start everything; return once the Node is Ready and metrics flow."""
        started = time.monotonic()
        binaries = build()
        self._enforcer = enforcer.build()
        self._metallb = loadbalancer.build()
        self._timed("binaries", started)
        started = time.monotonic()
        built = {
            "pause": images.pause_image(binaries),
            "nginx": images.nginx_image(),
            "sidecar": images.sidecar_image(),
        }
        self._timed("images", started)
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._binaries = binaries
        self.namespaces = Namespaces(binaries / "pause", self.workdir / "init.log").start()
        self.machines = [self._machine(1, self.workdir, self.namespaces)]
        self._network_and_mounts()
        self.dialer = Dialer(self.namespaces.net_path())
        self._dialers = {NODE_NAME: self.dialer}
        for _ in range(self.workers):
            self._join()
        self.outside = Namespaces(binaries / "pause", self.workdir / "outside.log").start()
        self._join_vpc(self.outside, "vpc-outside", OUTSIDE_IP)
        self._dialers[OUTSIDE] = Dialer(self.outside.net_path())
        self._registry()
        self.image_refs = {
            name: images.push(self.namespaces, image_id, f"{REGISTRY}/podlister/{name}:test")
            for name, image_id in built.items()
        }
        self._timed("namespaces, registry, push", started)
        started = time.monotonic()
        self.sysctls_found = host.hold_sysctls()
        self._holding_sysctls = True
        api = self.forward(NODE_IP, API_PORT)
        self._serving_certificate(self.workdir / "controlplane" / "pki")
        self.controlplane = ControlPlane(
            self.workdir / "controlplane",
            NODE_IP,
            port=API_PORT,
            public_url=f"https://{api.address}",
            prefix=self.namespaces.command(),
            controllers=("*", "-node-ipam-controller"),
            extra_args={
                # The node's name resolves nowhere: logs and exec go to its address.
                "kube-apiserver": [
                    *self._aggregation_flags(),
                    "--kubelet-preferred-address-types=InternalIP",
                ],
                "kube-controller-manager": ["--node-monitor-grace-period=20s"],
            },
        ).start()
        self._timed("control plane", started)
        started = time.monotonic()
        self._start_node_processes(binaries)
        wait_until(self._nodes_ready, timeout=START_TIMEOUT, interval=0.2, what="Nodes Ready")
        for each in self.machines:
            self._enforce(each)
        loadbalancer.start(self, self._metallb, LOAD_BALANCER_POOL, NODE_NAME, NODE_IP)
        self._timed("node ready", started)
        return self

    def add_worker(self) -> Machine:
        """One more node joins the running cluster, as a surge upgrade adds one: on the VPC
        bridge, its pod subnet routed from every node; returned once it is Ready and its
        NetworkPolicy enforcer runs.
        """
        joined = self._join()
        self._run(joined)
        wait_until(self._nodes_ready, timeout=START_TIMEOUT, interval=0.2, what="Nodes Ready")
        self._enforce(joined)
        return joined

    def lose(self, name: str) -> None:
        """The node lost without warning: its kubelet and containerd SIGKILLed and its link
        to the VPC bridge down (its containers run on, cut off).
        """
        assert self.controlplane is not None
        assert self.namespaces is not None
        self.controlplane.kill(f"kubelet-{name}")
        self.controlplane.kill(f"containerd-{name}")
        self.namespaces.must("ip", "link", "set", f"vpc-{name}", "down")

    def bring_back(self, name: str) -> None:
        """The lost node back: its link up, containerd and the kubelet started again."""
        assert self.controlplane is not None
        assert self.namespaces is not None
        self.namespaces.must("ip", "link", "set", f"vpc-{name}", "up")
        self.controlplane.start_again(f"containerd-{name}")
        back = next(each for each in self.machines if each.name == name)
        # The kubelet exits if containerd does not answer at its start.
        wait_until(back.containerd_answers, timeout=30, interval=0.1, what="containerd back")
        self.controlplane.start_again(f"kubelet-{name}")

    def _run(self, each: Machine) -> None:
        """containerd, the kubelet and kube-proxy on the node, its cgroup root made first."""
        assert self.controlplane is not None
        assert self._binaries is not None
        host.make_cgroups(each.cgroup_root)
        machine.launch(
            self.controlplane,
            each,
            self._binaries,
            self.image_refs["pause"],
            f"{NODE_IP}:{REGISTRY_PORT}",
        )

    def _enforce(self, each: Machine) -> None:
        """kube-router on the node; it finds its Node object at start, and stops if there
        is none yet.
        """
        assert self.controlplane is not None
        assert self._enforcer is not None
        self.controlplane.launch(
            f"kube-router-{each.name}",
            enforcer.command(
                self._enforcer, self.controlplane.inner_kubeconfig, each.name, SERVICE_CIDR
            ),
            prefix=each.namespaces.command(),
        )

    def stop(self) -> None:
        """Everything down, newest first; the host's sysctls and cgroups as they were."""
        if self.controlplane is not None:
            self.controlplane.stop()
        for forward in self._forwards:
            forward.close()
        self._forwards.clear()
        for dialer in self._dialers.values():
            dialer.close()
        self._dialers.clear()
        self.dialer = None
        for each in self.machines[1:]:
            each.namespaces.stop()
        if self.namespaces is not None:
            self.namespaces.stop()
            self.namespaces = None
        if self.outside is not None:
            self.outside.stop()
            self.outside = None
        if self._registry_process is not None:
            # It was in the namespaces: gone with their init; collect its status.
            self._registry_process.wait(timeout=10)
            self._registry_process = None
        # The kernel frees the cgroups of the killed processes a moment after they die.
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: (
                    not [
                        left
                        for each in self.machines
                        for left in host.remove_cgroups(each.cgroup_root)
                    ]
                ),
                timeout=10,
                interval=0.1,
                what="the nodes' cgroups removed",
            )
        if self._holding_sysctls:
            host.release_sysctls()
            self._holding_sysctls = False

    # ---- pieces --------------------------------------------------------------------------

    def _machine(self, index: int, folder: Path, namespaces: Namespaces) -> Machine:
        name, ip, subnet = machine_named(index)
        return Machine(name, ip, subnet, folder, namespaces, f"{self.cgroup_root}-{name}")

    def _network_and_mounts(self) -> None:
        """node-1 holds the VPC bridge (a dummy link is refused here). Its MAC address is
        fixed: a bridge left alone takes the lowest of its ports', so a node joining could
        change it, and MetalLB's speaker ignores an ARP probe sent to the old one (the
        machine outside lost the load balancer's IP for 3 s in one surge upgrade of four).
        """
        for folder in ("cni", "containerd", "kubelet", "registry"):
            (self.workdir / folder).mkdir(exist_ok=True)
        first = self.machines[0]
        first.namespaces.must(
            "sh",
            "-c",
            f"""
            set -e
            ip link set lo up
            ip link add podlister0 address {BRIDGE_MAC} type bridge
            ip addr add {first.ip}/24 dev podlister0
            ip link set podlister0 up
            {machine.routes(first, [], "podlister0")}
            {machine.mounts(first)}
            """,
        )

    def _join(self) -> Machine:
        """The next node's namespaces, joined to the VPC bridge by veth; its pod subnet
        routed from every node there, and theirs from it.
        """
        assert self._binaries is not None
        index = len(self.machines) + 1
        folder = self.workdir / f"node-{index}"
        folder.mkdir()
        joining = self._machine(
            index, folder, Namespaces(self._binaries / "pause", folder / "init.log").start()
        )
        self.machines.append(joining)
        self._join_vpc(joining.namespaces, f"vpc-{joining.name}", joining.ip)
        subnets = [(each.pod_subnet, each.ip) for each in self.machines]
        joining.namespaces.must(
            "sh",
            "-c",
            f"""
            set -e
            {machine.routes(joining, subnets, "eth0")}
            {machine.mounts(joining)}
            """,
        )
        for each in self.machines[:-1]:
            each.namespaces.must("ip", "route", "add", joining.pod_subnet, "via", joining.ip)
        self._dialers[joining.name] = Dialer(joining.namespaces.net_path())
        return joining

    def _join_vpc(self, joining: Namespaces, link: str, address: str) -> None:
        """A veth from the joining namespaces (eth0 there, with address) to the VPC bridge."""
        assert self.namespaces is not None
        # In node-1's network namespace but the host's PID namespace, where the joining
        # init has the pid that names its network namespace.
        subprocess.run(
            self.namespaces.command(
                "sh",
                "-c",
                f"""
                set -e
                ip link add {link} type veth peer name eth0 netns {joining.init_pid}
                ip link set {link} master podlister0 up
                """,
                mount=False,
            ),
            check=True,
            capture_output=True,
            timeout=30,
        )
        joining.must(
            "sh",
            "-c",
            f"""
            set -e
            ip link set lo up
            ip addr add {address}/24 dev eth0
            ip link set eth0 up
            """,
        )

    def _registry(self) -> None:
        assert self.controlplane is None
        config = self.workdir / "registry.yml"
        config.write_text(
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(self.workdir / "registry")}},
                    # Every address of node-1: the other nodes pull through the VPC bridge.
                    "http": {"addr": f":{REGISTRY_PORT}"},
                }
            ),
            encoding="utf-8",
        )
        assert self.namespaces is not None
        log = (self.workdir / "registry.log").open("ab")
        self._registry_process = subprocess.Popen(
            self.namespaces.command("docker-registry", "serve", str(config)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        host_name, port = REGISTRY.split(":")
        wait_until(
            lambda: self.http(host_name, int(port), "/v2/").status == 200,
            timeout=30,
            interval=0.1,
            what="the node's registry",
        )

    def _serving_certificate(self, cert_dir: Path) -> None:
        """The API server's certificate, made before it starts (it keeps one it finds in its
        --cert-dir): the one it makes itself names only its own and the Service's address,
        and the host reaches it at 127.0.0.1 through the forward.
        """
        cert_dir.mkdir(parents=True, exist_ok=True)
        ca, ca_key = _certificate(cert_dir, "ca", "/CN=podlister-node-ca")
        names = ["IP:127.0.0.1", f"IP:{NODE_IP}", "IP:10.96.0.1", "DNS:localhost"]
        names += ["DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc"]
        leaf, _ = _certificate(
            cert_dir, "apiserver", "/CN=kube-apiserver", signer=(ca, ca_key), names=names
        )
        # Leaf then CA in one file: the file clients are given as the CA checks out too.
        leaf.write_bytes(leaf.read_bytes() + ca.read_bytes())

    def _aggregation_flags(self) -> list[str]:
        """The front proxy's CA and client certificate: the API server proves to
        metrics-server (an aggregated API) who sent a request it passes on.
        """
        pki = self.workdir / "front-proxy"
        pki.mkdir(exist_ok=True)
        ca, ca_key = _certificate(pki, "ca", "/CN=podlister-front-proxy-ca")
        cert, key = _certificate(pki, "client", "/CN=front-proxy-client", signer=(ca, ca_key))
        return [
            f"--requestheader-client-ca-file={ca}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={cert}",
            f"--proxy-client-key-file={key}",
            # Straight to metrics-server's endpoint, not through its Service's address.
            "--enable-aggregator-routing=true",
        ]

    def _start_node_processes(self, binaries: Path) -> None:
        assert self.controlplane is not None
        inner = self.controlplane.inner_kubeconfig
        cp = self.controlplane
        cp.launch(
            "kube-scheduler",
            [
                str(binaries / "kube-scheduler"),
                f"--kubeconfig={inner}",
                f"--authentication-kubeconfig={inner}",
                f"--authorization-kubeconfig={inner}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
            ],
        )
        for each in self.machines:
            self._run(each)
        cp.launch(
            "metrics-server",
            [
                str(binaries / "metrics-server"),
                f"--kubeconfig={inner}",
                f"--authentication-kubeconfig={inner}",
                f"--authorization-kubeconfig={inner}",
                f"--bind-address={NODE_IP}",
                f"--secure-port={METRICS_PORT}",
                f"--cert-dir={self.workdir / 'metrics-server'}",
                "--kubelet-insecure-tls",
                "--kubelet-preferred-address-types=InternalIP",
                "--metric-resolution=10s",
                "--kubelet-request-timeout=5s",
            ],
        )
        applied = self.kubectl("apply", "-f", "-", input_text=json.dumps(_metrics_api()))
        if applied.returncode != 0:
            raise RuntimeError(f"metrics-server's APIService: {applied.stderr}")

    def _nodes_ready(self) -> bool:
        assert self.controlplane is not None
        self.controlplane.check_alive()
        nodes = self.controlplane.rest.get("/api/v1/nodes")["items"]
        ready = [
            node
            for node in nodes
            for condition in node.get("status", {}).get("conditions", [])
            if condition["type"] == "Ready" and condition["status"] == "True"
        ]
        return len(ready) == len(self.machines)


def _certificate(
    folder: Path,
    name: str,
    subject: str,
    *,
    signer: tuple[Path, Path] | None = None,
    names: list[str] | None = None,
) -> tuple[Path, Path]:
    """A certificate and key (openssl): self-signed CA without signer, else signed by it."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    if signer is None:
        commands = [
            [
                *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)),
                *("-out", str(cert), "-days", "2", "-subj", subject),
            ]
        ]
    else:
        csr, extensions = folder / f"{name}.csr", folder / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={','.join(names)}\n" if names else "\n", encoding="ascii"
        )
        commands = [
            [
                *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr)),
                *("-subj", subject),
            ],
            [
                *("x509", "-req", "-in", str(csr), "-CA", str(signer[0]), "-CAkey", str(signer[1])),
                *("-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions)),
            ],
        ]
    for command in commands:
        subprocess.run(["openssl", *command], capture_output=True, check=True, timeout=60)
    return cert, key


def _metrics_api() -> dict[str, Any]:
    """metrics-server runs on the node, outside any pod: its Service has no selector, and
    its endpoints name the node's address.
    """
    meta = {"name": "metrics-server", "namespace": "kube-system"}
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"ports": [{"port": 443, "targetPort": METRICS_PORT}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": meta,
                "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [{"port": METRICS_PORT}]}],
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "spec": {
                    "service": {**meta, "port": 443},
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    # metrics-server's certificate is self-signed, made at its start.
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ],
    }
