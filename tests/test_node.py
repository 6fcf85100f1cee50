"""The shipped overlays on a real node: a kubelet runs our pod spec in containerd, kube-proxy
routes the Service, the HPA reads metrics-server, and every page follows the pods.

One node serves the module (``tests/node``); each test applies a shipped overlay through the
image-only overlay (``node/overlay.py``) with ``kubectl``, as a user on the node types it,
and deletes it afterwards.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from node.cluster import NODE_IP, Node
from node.overlay import image_overlay

from polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

NAMESPACE = "podlister"
SELECTOR = "app.kubernetes.io/name=podlister"
NODE_PORT = 30080


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One real node for the module, taken down (host put back) at its end."""
    with Node(tmp_path_factory.mktemp("node")) as started:
        yield started


def apply(node: Node, overlay: Path) -> None:
    """Kubectl apply -k, then wait for the rollout as a user would."""
    applied = node.kubectl("apply", "-k", str(overlay))
    assert applied.returncode == 0, applied.stderr
    rolled = node.kubectl(
        "-n", NAMESPACE, "rollout", "status", "deployment/podlister", "--timeout=180s"
    )
    assert rolled.returncode == 0, rolled.stderr + rolled.stdout + describe(node)


def delete(node: Node, overlay: Path) -> None:
    """Kubectl delete -k and wait until the namespace is gone."""
    deleted = node.kubectl("delete", "-k", str(overlay), "--wait=true", "--timeout=180s")
    assert deleted.returncode == 0, deleted.stderr


def describe(node: Node) -> str:
    """What kubectl says of the pods and the namespace's events, for a failure message."""
    pods = node.kubectl("-n", NAMESPACE, "describe", "pods").stdout
    events = node.kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp").stdout
    return f"\n--- pods\n{pods[-6000:]}\n--- events\n{events[-4000:]}"


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


def curl(node: Node, url: str) -> str:
    """Curl on the node, as a user types it; the body."""
    assert node.namespaces is not None
    result = node.namespaces.run("curl", "-sS", "--fail", "--max-time", "5", url)
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed(text: str) -> list[str]:
    """index.txt's addresses."""
    return text.split()


@pytest.fixture
def local_overlay(node: Node, tmp_path: Path) -> Iterator[Path]:
    """The local overlay, applied and rolled out; deleted after the test."""
    overlay = image_overlay(tmp_path / "local", "local", node.image_refs)
    apply(node, overlay)
    yield overlay
    delete(node, overlay)


@pytest.mark.usefixtures("local_overlay")
def test_local_overlay_lists_the_ready_pods_through_clusterip_and_nodeport(node: Node) -> None:
    """The local overlay (kubectl apply -k): 2 pods Ready; curl through the ClusterIP and
    through NodePort 30080 returns exactly their IPs (text and JSON), and every pod's own
    page says the same.
    """
    expected = ready_ips(node)
    assert len(expected) == 2, describe(node)
    names = {pod["status"]["podIP"]: pod["metadata"]["name"] for pod in pods(node)}
    service = cluster_ip(node)
    for base in (f"http://{service}", f"http://{NODE_IP}:{NODE_PORT}"):
        url = f"{base}/index.txt"
        wait_until(
            lambda url=url: listed(curl(node, url)) == expected,  # type: ignore[misc]
            timeout=5,
            what=f"{base}/index.txt listing {expected}",
        )
        document = json.loads(curl(node, f"{base}/index.json"))
        assert document["addresses"] == expected
        assert {m["address"]: m["pod"] for m in document["members"]} == names
    for ip in expected:
        own = node.http(ip, 8080, "/index.txt")
        assert own.status == 200
        assert listed(own.text()) == expected
