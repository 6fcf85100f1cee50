"""What a pod's containers cost, read where the kubelet's cgroups keep it (cgroup v1 on this
machine): CPU time, throttling against the CPU limit, and peak memory against the limit.

The kubelet puts each container in ``<cgroupRoot>/kubepods[/<qos>]/pod<uid>/<container id>``
of every hierarchy; the figures are the kernel's own, for the container's whole life so far,
so a reading before and after a step gives what the step cost.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from node import host

if TYPE_CHECKING:
    from pathlib import Path

    from node.cluster import Node


@dataclasses.dataclass(frozen=True)
class Cost:
    """One container's figures so far: CPU seconds, periods throttled and seconds throttled
    (CFS quota, i.e. its CPU limit), and its peak memory in bytes (page cache included: a
    memory-backed emptyDir counts against the limit of whoever writes it).
    """

    cpu_seconds: float
    throttled_periods: int
    throttled_seconds: float
    peak_bytes: int


def container_id(pod: dict[str, Any], container: str) -> str:
    """The runtime's ID of the named container (init and native sidecar ones included)."""
    status = pod.get("status", {})
    for each in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
        if each["name"] == container and each.get("containerID"):
            return str(each["containerID"]).split("//")[-1]
    return ""


def _folder(node: Node, controller: str, pod: dict[str, Any], container: str) -> Path | None:
    cid = container_id(pod, container)
    machine = next(m for m in node.machines if m.name == pod["spec"].get("nodeName"))
    root = host.CGROUPS / controller / machine.cgroup_root
    uid = pod["metadata"]["uid"]
    found = [*root.glob(f"kubepods*/pod{uid}/{cid}"), *root.glob(f"kubepods*/*/pod{uid}/{cid}")]
    return found[0] if cid and found else None


def cost(node: Node, pod: dict[str, Any], container: str) -> Cost | None:
    """The container's figures now, None if its cgroup is not (or no longer) there."""
    cpu = _folder(node, "cpu", pod, container)
    cpuacct = _folder(node, "cpuacct", pod, container)
    memory = _folder(node, "memory", pod, container)
    if cpu is None or cpuacct is None or memory is None:
        return None
    try:
        stat = dict(
            line.split() for line in (cpu / "cpu.stat").read_text().splitlines() if line.strip()
        )
        return Cost(
            cpu_seconds=int((cpuacct / "cpuacct.usage").read_text()) / 1e9,
            throttled_periods=int(stat.get("nr_throttled", 0)),
            throttled_seconds=int(stat.get("throttled_time", 0)) / 1e9,
            peak_bytes=int((memory / "memory.max_usage_in_bytes").read_text()),
        )
    except (OSError, ValueError):
        return None  # the container went between the glob and the read
