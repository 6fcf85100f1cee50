"""What every node of the cluster runs, each in namespaces of its own: containerd with the
CNI bridge, the kubelet and kube-proxy, with their configuration.

The cluster's network is what a cloud's VPC gives: each node has an address on one bridge
(node-1 holds it, with the control plane), and the pod subnets are routed between the
nodes by routes the harness sets, as the cloud's routing tables do; the bridge CNI plugin
only wires a node's own pods. Pod subnets are fixed per node (10.244.<k-1>.0/24 for node-k),
so the controller manager allocates none.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from support.polling import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from controlplane.cluster import ControlPlane
    from node.namespace import Namespaces

REGISTRY = "127.0.0.1:5000"
CLUSTER_CIDR = "10.244.0.0/16"


@dataclass(frozen=True)
class Machine:
    """One node: its name, its address on the VPC bridge, its pod subnet, its folder and
    namespaces, and the cgroup its kubelet puts pods under.
    """

    name: str
    ip: str
    pod_subnet: str
    workdir: Path
    namespaces: Namespaces
    cgroup_root: str

    @property
    def containerd_socket(self) -> Path:
        """Where containerd's socket appears on the host's view of the node's /run."""
        return self.workdir / "run" / "containerd" / "containerd.sock"

    def containerd_answers(self) -> bool:
        """Whether containerd accepts a connection on its socket (a killed one leaves the
        file behind, refusing until the next containerd binds it again).
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.containerd_socket))
            except OSError:
                return False
        return True


def machine_named(index: int) -> tuple[str, str, str]:
    """node-<index>'s name, VPC address and pod subnet (index from 1)."""
    return f"node-{index}", f"10.200.0.{index}", f"10.244.{index - 1}.0/24"


def mounts(machine: Machine) -> str:
    """Shell lines binding the node's own /run, /var/log and /var/lib: containerd, CNI and
    the kubelet write to fixed paths there (shim sockets, pod netns, /var/log/containers,
    CNI's cache).
    """
    lines = []
    for folder, target in (("run", "/run"), ("var-log", "/var/log"), ("var-lib", "/var/lib")):
        (machine.workdir / folder).mkdir(parents=True, exist_ok=True)
        lines.append(f"mount --bind {machine.workdir / folder} {target}")
    return "\n".join(lines)


def routes(machine: Machine, others: list[tuple[str, str]], device: str) -> str:
    """Shell lines routing the other nodes' pod subnets (subnet, node address) to them, as
    a VPC's routing table does, and a default route: nothing lies behind it, but without a
    route a connection to a Service address fails before kube-proxy's rules rewrite it.
    """
    lines = [f"ip route add default dev {device}"]
    lines += [f"ip route add {subnet} via {ip}" for subnet, ip in others if ip != machine.ip]
    return "\n".join(lines)


def launch(
    plane: ControlPlane,
    machine: Machine,
    binaries: Path,
    pause_image: str,
    registry_address: str,
) -> None:
    """Start containerd, the kubelet and kube-proxy in the node's namespaces (stopped with
    the control plane's processes); return once containerd's socket is there.
    """
    prefix = machine.namespaces.command()
    plane.launch(
        f"containerd-{machine.name}",
        ["containerd", f"--config={containerd_config(machine, pause_image, registry_address)}"],
        prefix=prefix,
    )
    wait_until(machine.containerd_answers, timeout=30, interval=0.1, what="containerd's socket")
    plane.launch(
        f"kubelet-{machine.name}",
        [
            str(binaries / "kubelet"),
            f"--config={kubelet_config(machine)}",
            f"--kubeconfig={plane.inner_kubeconfig}",
            f"--root-dir={machine.workdir / 'kubelet'}",
            f"--node-ip={machine.ip}",
            f"--hostname-override={machine.name}",
        ],
        prefix=prefix,
    )
    plane.launch(
        f"kube-proxy-{machine.name}",
        [
            str(binaries / "kube-proxy"),
            f"--config={kube_proxy_config(machine, plane.inner_kubeconfig)}",
        ],
        prefix=prefix,
    )


def containerd_config(machine: Machine, pause_image: str, registry_address: str) -> Path:
    """The config of containerd and of the CNI bridge: pulls of REGISTRY go to registry_address
    (node-1's registry, on the VPC bridge).
    """
    cni = machine.workdir / "cni"
    cni.mkdir(parents=True, exist_ok=True)
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
                        # No masquerade: a pod's packets to another node keep the pod's
                        # address, which the NetworkPolicy is written against.
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": machine.pod_subnet}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(machine.workdir / "cni-ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            }
        ),
        encoding="utf-8",
    )
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    root = machine.workdir / "containerd"
    config = machine.workdir / "containerd.toml"
    config.write_text(
        f"""version = 2
root = "{root / "root"}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "/run/containerd/containerd.sock"
[{cri}]
  sandbox_image = "{pause_image}"
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
  endpoint = ["http://{registry_address}"]
""",
        encoding="utf-8",
    )
    return config


def kubelet_config(machine: Machine) -> Path:
    """The kubelet's configuration for this machine."""
    resolv = machine.workdir / "resolv.conf"
    resolv.write_text("options ndots:1\n", encoding="ascii")
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine: swap may be on, cgroup v1, no systemd.
        "failSwapOn": False,
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{machine.cgroup_root}",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "address": machine.ip,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        # metrics-server reads /metrics/resource with its own token; inside the node's
        # namespace the kubelet lets anyone read.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "volumePluginDir": str(machine.workdir / "volume-plugins"),
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
    path = machine.workdir / "kubelet.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def kube_proxy_config(machine: Machine, kubeconfig: Path) -> Path:
    """kube-proxy's configuration for this machine."""
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
        "hostnameOverride": machine.name,
        "clusterCIDR": CLUSTER_CIDR,
        "nodePortAddresses": [f"{machine.ip}/32"],
        # 0: leave the conntrack sysctls (global, not per namespace) as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "nftables": {"minSyncPeriod": "0s"},
    }
    path = machine.workdir / "kube-proxy.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path
