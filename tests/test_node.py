"""The shipped overlays on a real node: a kubelet runs our pod spec in containerd, kube-proxy
routes the Service, the HPA reads metrics-server, and every page follows the pods.

One node serves the module (``tests/node``); each test applies a shipped overlay through the
image-only overlay (``node/overlay.py``) with ``kubectl``, as a user on the node types it,
and deletes it afterwards.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
from node.cluster import NODE_IP, Node
from node.overlay import image_overlay
from node.traffic import PacedClient, PodWatcher

from polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

NAMESPACE = "podlister"
SELECTOR = "app.kubernetes.io/name=podlister"
NODE_PORT = 30080
# Measured figures, shown with -o log_cli=true --log-cli-level=INFO (and on a failure).
figures = logging.getLogger("podlister.node")


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


def wait_listed_everywhere(node: Node, expected: list[str], *, timeout: float = 10) -> None:
    """Until the Service's page and every Ready pod's own page list exactly expected."""

    def agree() -> bool:
        service = node.http(cluster_ip(node), 80, "/index.txt")
        own = [node.http(ip, 8080, "/index.txt") for ip in expected]
        return all(listed(answer.text()) == expected for answer in [service, *own])

    wait_until(agree, timeout=timeout, interval=0.1, what=f"every page listing {expected}")


def hpa(node: Node) -> dict[str, Any]:
    """The HorizontalPodAutoscaler as the API has it."""
    assert node.controlplane is not None
    answer: dict[str, Any] = node.controlplane.rest.get(
        f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/podlister"
    )
    return answer


def cpu_utilization(node: Node) -> int | None:
    """The HPA's current average CPU utilisation, None while it has none."""
    for metric in hpa(node).get("status", {}).get("currentMetrics") or []:
        current = metric.get("resource", {}).get("current", {})
        if "averageUtilization" in current:
            return int(current["averageUtilization"])
    return None


def test_do_overlay_gets_its_node_port_and_the_hpa_reads_cpu(node: Node, tmp_path: Path) -> None:
    """The do overlay applied as is (images aside): the LoadBalancer Service gets a node
    port and the page through it lists the Ready pods (its external IP stays pending: no
    cloud controller here); the HPA reads CPU from metrics-server, a number, not <unknown>.
    """
    overlay = image_overlay(tmp_path / "do", "do", node.image_refs)
    apply(node, overlay)
    try:
        assert node.controlplane is not None
        service = node.controlplane.rest.get(f"/api/v1/namespaces/{NAMESPACE}/services/podlister")
        assert service["spec"]["type"] == "LoadBalancer"
        assert not service.get("status", {}).get("loadBalancer", {}).get("ingress")
        shown = node.kubectl("-n", NAMESPACE, "get", "service", "podlister").stdout
        assert "<pending>" in shown
        port = service["spec"]["ports"][0]["nodePort"]
        expected = ready_ips(node)
        assert len(expected) == 2
        wait_until(
            lambda: listed(curl(node, f"http://{NODE_IP}:{port}/index.txt")) == expected,
            timeout=5,
            what="the load balancer's node port listing the pods",
        )
        wait_until(
            lambda: cpu_utilization(node) is not None,
            timeout=120,
            interval=1,
            what="the HPA reading CPU from metrics-server",
        )
        table = node.kubectl("-n", NAMESPACE, "get", "hpa", "podlister").stdout
        assert "<unknown>" not in table, table
        assert "cpu: " in table, table
    finally:
        delete(node, overlay)


# Test-only: a target the bounded load below crosses on this machine, at most 5 pods, and a
# scale-down without the shipped five-minute window, so the test sees both directions.
FAST_HPA = {
    "target": {"kind": "HorizontalPodAutoscaler", "name": "podlister"},
    "patch": json.dumps(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podlister"},
            "spec": {
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 20},
                        },
                    }
                ],
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 0,
                        "selectPolicy": "Max",
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
                    }
                },
            },
        }
    ),
}


def test_hpa_scales_with_load_and_every_page_follows(node: Node, tmp_path: Path) -> None:
    """Load through the Service makes the HPA add pods: within 2 s of each new pod Ready,
    the Service's page and every Ready pod's page list it. The load stops, the HPA
    scales back to 2, and every page lists exactly the 2 left.
    """
    overlay = image_overlay(tmp_path / "do", "do", node.image_refs, patches=[FAST_HPA])
    apply(node, overlay)
    try:
        first = ready_ips(node)
        watcher = PodWatcher(lambda: pods(node), max_seconds=400)
        load = PacedClient(node, cluster_ip(node), 80, per_second=400, workers=4, max_seconds=240)
        confirmed: dict[str, float] = {}
        try:

            def new_pods_listed() -> bool:
                ready = dict(watcher.ready_at)
                for ip in set(ready) - set(first) - set(confirmed):
                    pages = [node.http(cluster_ip(node), 80, "/index.txt")]
                    pages += [node.http(other, 8080, "/index.txt") for other in ready]
                    if all(ip in listed(page.text()) for page in pages):
                        confirmed[ip] = time.monotonic()
                return len(confirmed) >= 1 and hpa(node)["status"].get("desiredReplicas", 0) <= (
                    len(first) + len(confirmed)
                )

            wait_until(new_pods_listed, timeout=180, interval=0.1, what="the HPA scaling up")
        finally:
            answers = load.stop()
        lags = {ip: confirmed[ip] - watcher.ready_at[ip] for ip in confirmed}
        figures.info(
            "scale-up: %d requests, utilisation %s %%, page lag after Ready (s): %s",
            len(answers),
            cpu_utilization(node),
            lags,
        )
        assert all(lag <= 2.0 for lag in lags.values()), lags
        wait_until(
            lambda: len(ready_ips(node)) == 2 and len(pods(node)) == 2,
            timeout=180,
            interval=0.5,
            what="the HPA scaling back to 2",
        )
        watcher.stop()
        wait_listed_everywhere(node, ready_ips(node))
    finally:
        delete(node, overlay)
