"""A real single-node cluster in namespaces of its own: the control plane, kube-scheduler,
containerd with the CNI bridge, the kubelet, kube-proxy, metrics-server, kube-router's
NetworkPolicy enforcer and MetalLB's load balancer; and a machine outside the cluster.

Inside the node's network namespace addresses are fixed and private to it: the node is
10.200.0.1 on a bridge the test makes, pods get 10.244.0.0/24 from the CNI bridge, Services
10.96.0.0/16, load balancer IPs 10.200.0.240/28 on the bridge, the node's registry listens on
its loopback. ``Node.outside`` stands for a user's machine: namespaces of their own with
10.200.0.100 on the node's bridge (the VPC), and nothing of the cluster's but what its
network lets through. Two suites each have their own.
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
from node import enforcer, host, images, loadbalancer
from node.namespace import Dialer, Forward, Namespaces
from support.lifecycle import Lifecycle
from support.polling import wait_until

if TYPE_CHECKING:
    from pathlib import Path

NODE_IP = "10.200.0.1"
NODE_NAME = "node-1"
OUTSIDE_IP = "10.200.0.100"
LOAD_BALANCER_POOL = "10.200.0.240/28"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
REGISTRY = "127.0.0.1:5000"
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
    """The whole node; start() brings it up (building what is missing), stop() takes it all
    down and puts the host back as it was.
    """

    def __init__(self, workdir: Path) -> None:
        """Paths only; nothing runs before start()."""
        self.workdir = workdir
        self.cgroup_root = f"podlister-node-{secrets.token_hex(4)}"
        self.namespaces: Namespaces | None = None
        self.outside: Namespaces | None = None
        self.dialer: Dialer | None = None
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

    def http(self, host_name: str, port: int, path: str = "/", *, timeout: float = 5) -> HttpAnswer:
        """One GET from inside the node's network namespace (a new connection each time)."""
        assert self.dialer is not None
        return http_get(self.dialer, host_name, port, path, timeout=timeout)

    def forward(self, host_name: str, port: int) -> Forward:
        """A loopback port of the host leading to host_name:port inside; closed at stop()."""
        assert self.dialer is not None
        forward = Forward(self.dialer, (host_name, port))
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
        self.namespaces = Namespaces(binaries / "pause", self.workdir / "init.log").start()
        self._network_and_mounts()
        self.outside = Namespaces(binaries / "pause", self.workdir / "outside.log").start()
        self._outside_network()
        self.dialer = Dialer(self.namespaces.net_path())
        self._registry()
        self.image_refs = {
            name: images.push(self.namespaces, image_id, f"{REGISTRY}/podlister/{name}:test")
            for name, image_id in built.items()
        }
        self._timed("namespaces, registry, push", started)
        started = time.monotonic()
        self.sysctls_found = host.hold_sysctls()
        self._holding_sysctls = True
        host.make_cgroups(self.cgroup_root)
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
        wait_until(self._node_ready, timeout=START_TIMEOUT, interval=0.2, what="Node Ready")
        # kube-router finds its Node object at start, and stops if there is none yet.
        self.controlplane.launch(
            "kube-router",
            enforcer.command(
                self._enforcer, self.controlplane.inner_kubeconfig, NODE_NAME, SERVICE_CIDR
            ),
        )
        loadbalancer.start(self, self._metallb, LOAD_BALANCER_POOL, NODE_NAME, NODE_IP)
        self._timed("node ready", started)
        return self

    def stop(self) -> None:
        """Everything down, newest first; the host's sysctls and cgroups as they were."""
        if self.controlplane is not None:
            self.controlplane.stop()
        for forward in self._forwards:
            forward.close()
        self._forwards.clear()
        if self.dialer is not None:
            self.dialer.close()
            self.dialer = None
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
                lambda: not host.remove_cgroups(self.cgroup_root),
                timeout=10,
                interval=0.1,
                what="the node's cgroups removed",
            )
        if self._holding_sysctls:
            host.release_sysctls()
            self._holding_sysctls = False

    # ---- pieces --------------------------------------------------------------------------

    def _network_and_mounts(self) -> None:
        assert self.namespaces is not None
        for folder in ("run", "var-log", "var-lib", "cni", "containerd", "kubelet", "registry"):
            (self.workdir / folder).mkdir(exist_ok=True)
        # The node's address on a bridge of its own (a dummy link is refused here), and a
        # default route through it: nothing lies behind it, but without a route a
        # connection to a Service address fails before kube-proxy's rules could rewrite it.
        # /run, /var/log and /var/lib hold what containerd, CNI and the kubelet write to
        # fixed paths (shim sockets, pod netns, /var/log/containers, CNI's cache).
        script = f"""
            set -e
            ip link set lo up
            ip link add podlister0 type bridge
            ip addr add {NODE_IP}/24 dev podlister0
            ip link set podlister0 up
            ip route add default dev podlister0
            mount --bind {self.workdir / "run"} /run
            mount --bind {self.workdir / "var-log"} /var/log
            mount --bind {self.workdir / "var-lib"} /var/lib
        """
        self.namespaces.must("sh", "-c", script)

    def _outside_network(self) -> None:
        """A veth from the outside machine to the node's bridge, as a VPC would join them."""
        assert self.namespaces is not None
        assert self.outside is not None
        # In the node's network namespace but the host's PID namespace, where the outside's
        # init has the pid that names its network namespace.
        subprocess.run(
            self.namespaces.command(
                "sh",
                "-c",
                f"""
                set -e
                ip link add vpc-outside type veth peer name eth0 netns {self.outside.init_pid}
                ip link set vpc-outside master podlister0 up
                """,
                mount=False,
            ),
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.outside.must(
            "sh",
            "-c",
            f"""
            set -e
            ip link set lo up
            ip addr add {OUTSIDE_IP}/24 dev eth0
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
                    "http": {"addr": REGISTRY},
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
        cp.launch("containerd", ["containerd", f"--config={self._containerd_config()}"])
        wait_until(
            (self.workdir / "run" / "containerd" / "containerd.sock").exists,
            timeout=30,
            interval=0.1,
            what="containerd's socket",
        )
        cp.launch(
            "kubelet",
            [
                str(binaries / "kubelet"),
                f"--config={self._kubelet_config()}",
                f"--kubeconfig={inner}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--node-ip={NODE_IP}",
                f"--hostname-override={NODE_NAME}",
            ],
        )
        cp.launch(
            "kube-proxy",
            [str(binaries / "kube-proxy"), f"--config={self._kube_proxy_config(inner)}"],
        )
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

    def _containerd_config(self) -> Path:
        cni = self.workdir / "cni"
        (cni / "10-podlister.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "podlister",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.workdir / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                }
            ),
            encoding="utf-8",
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        root = self.workdir / "containerd"
        config = self.workdir / "containerd.toml"
        config.write_text(
            f"""version = 2
root = "{root / "root"}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "/run/containerd/containerd.sock"
[{cri}]
  sandbox_image = "{self.image_refs["pause"]}"
  # runc sets oom_score_adj -998 for the sandbox; without CAP_SYS_RESOURCE that is refused
  # and every sandbox fails ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  disable_apparmor = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"
[{cri}.registry.mirrors."{REGISTRY}"]
  endpoint = ["http://{REGISTRY}"]
""",
            encoding="utf-8",
        )
        return config

    def _kubelet_config(self) -> Path:
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("options ndots:1\n", encoding="ascii")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine: swap may be on, cgroup v1, no systemd.
            "failSwapOn": False,
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            # metrics-server reads /metrics/resource with its own token; inside the node's
            # namespace the kubelet lets anyone read.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            "resolvConf": str(resolv),
            # The machine's disk is shared and may be fuller than the defaults allow.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "2s",
        }
        path = self.workdir / "kubelet.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def _kube_proxy_config(self, kubeconfig: Path) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            # nftables, not iptables: kube-router's policy controller saves and restores the
            # whole iptables filter table, so a kube-proxy change landing in between is undone
            # (kube-router issues 1248 and 1372): seen here as a Service's stale "has no
            # endpoints" REJECT refusing requests for 150 ms after a rollout. In its own
            # nftables table kube-proxy is out of kube-router's reach.
            "mode": "nftables",
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": CLUSTER_CIDR,
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # 0: leave the conntrack sysctls (global, not per namespace) as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "nftables": {"minSyncPeriod": "0s"},
        }
        path = self.workdir / "kube-proxy.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def _node_ready(self) -> bool:
        assert self.controlplane is not None
        self.controlplane.check_alive()
        nodes = self.controlplane.rest.get("/api/v1/nodes")["items"]
        return any(
            condition["type"] == "Ready" and condition["status"] == "True"
            for node in nodes
            for condition in node.get("status", {}).get("conditions", [])
        )


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
