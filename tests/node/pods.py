"""The podlister pods and Service on a node, as the API has them (the node's tests and
benchmarks read them the same way).
"""

from __future__ import annotations

import concurrent.futures
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


def scale(node: Node, replicas: int) -> None:
    """Scale the Deployment with kubectl, as a user types it."""
    done = node.kubectl("-n", NAMESPACE, "scale", "deployment/podlister", f"--replicas={replicas}")
    assert done.returncode == 0, done.stderr


def every_page_lists_the_ready_pods(node: Node, replicas: int) -> bool:
    """Whether exactly replicas pods exist, all Ready, and the Service's page and every pod's
    own page (read from node-1, 16 side by side, a new connection each) list exactly them.
    """
    found = pods(node)
    expected = ready_ips(node)
    if len(found) != replicas or len(expected) != replicas:
        return False
    addresses = [(cluster_ip(node), 80), *((ip, 8080) for ip in expected)]

    def lists_them(address: tuple[str, int]) -> bool:
        try:
            answer = node.http(address[0], address[1], "/index.txt")
        except OSError:
            return False
        return answer.status == 200 and answer.text().split() == expected

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return all(pool.map(lists_them, addresses))
