"""Play the scheduler and the kubelet for pods on the real control plane.

Without a kubelet a pod never gets an IP or a Ready condition, so the EndpointSlice
controller never lists it. Tests do the kubelet's part through the API, as the kubelet
does it: bind the pod to a Node, then write its status subresource.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from controlplane.objects import bare_pod

if TYPE_CHECKING:
    from controlplane.rest import Rest

NODE = "node-1"


def register_node(rest: Rest, name: str = NODE) -> None:
    """Create the Node; the EndpointSlice controller skips pods whose node it cannot find."""
    existing = rest.get("/api/v1/nodes")["items"]
    if any(node["metadata"]["name"] == name for node in existing):
        return
    rest.post("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def pods(rest: Rest, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods matching a label selector, live ones only (not being deleted)."""
    items: list[dict[str, Any]] = rest.get(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    )["items"]
    return [pod for pod in items if "deletionTimestamp" not in pod["metadata"]]


def bind(rest: Rest, namespace: str, pod: str, node: str = NODE) -> None:
    """Schedule the pod onto node, through the binding subresource as the scheduler does."""
    rest.post(
        f"/api/v1/namespaces/{namespace}/pods/{pod}/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        },
    )


def report(rest: Rest, namespace: str, pod: str, *, ip: str, ready: bool) -> None:
    """Write the pod's status as a kubelet would: running at ip, Ready or not."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = "True" if ready else "False"
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": state, "lastTransitionTime": now},
        {"type": "Ready", "status": state, "lastTransitionTime": now},
    ]
    rest.merge_patch(
        f"/api/v1/namespaces/{namespace}/pods/{pod}/status",
        {
            "status": {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "conditions": conditions,
            }
        },
    )


def delete(rest: Rest, namespace: str, pod: str) -> None:
    """Delete the pod at once: no kubelet is there to confirm a graceful stop."""
    rest.delete(f"/api/v1/namespaces/{namespace}/pods/{pod}")


def run_ready_pod(rest: Rest, namespace: str, name: str, ip: str) -> None:
    """A pod of the base's Service, created, scheduled and reported Ready at ip."""
    register_node(rest)
    rest.post(f"/api/v1/namespaces/{namespace}/pods", bare_pod(name))
    bind(rest, namespace, name)
    report(rest, namespace, name, ip=ip, ready=True)
