"""The podlister pods and Service on a node, as the API has them (the node's tests and
benchmarks read them the same way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.cluster import Node

NAMESPACE = "podlister"
SELECTOR = "app.kubernetes.io/name=podlister"


def pods(node: Node) -> list[dict[str, Any]]:
    """The podlister pods as the API has them."""
    assert node.controlplane is not None
    answer = node.controlplane.rest.get(
        f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={SELECTOR}"
    )
    return list(answer["items"])


def is_ready(pod: dict[str, Any]) -> bool:
    """Ready, and not being deleted."""
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready and "deletionTimestamp" not in pod["metadata"]


def ready_ips(node: Node) -> list[str]:
    """The Ready pods' IPs, in the page's order (sorted as addresses)."""
    return sorted((pod["status"]["podIP"] for pod in pods(node) if is_ready(pod)), key=_as_tuple)


def _as_tuple(ip: str) -> tuple[int, ...]:
    return tuple(int(part) for part in ip.split("."))


def cluster_ip(node: Node) -> str:
    """The Service's ClusterIP."""
    assert node.controlplane is not None
    service = node.controlplane.rest.get(f"/api/v1/namespaces/{NAMESPACE}/services/podlister")
    return str(service["spec"]["clusterIP"])
