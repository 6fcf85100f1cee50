"""Pods that stand for other workloads of the cluster: a pause container in a namespace of the
test's choosing, whose network namespace a test joins to connect as that pod does (from its
address, so the NetworkPolicy enforcer judges the connection as it would that pod's).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from node import host
from node.cluster import HttpAnswer, http_get
from node.namespace import Dialer
from support.polling import wait_until

if TYPE_CHECKING:
    from node.cluster import Node


class ClientPod:
    """One running pause pod and a way into its network namespace; close() leaves the pod."""

    def __init__(self, node: Node, namespace: str, name: str = "client") -> None:
        """Create the pod (the namespace must exist) and wait until it runs."""
        self.node, self.namespace, self.name = node, namespace, name
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "containers": [{"name": "pause", "image": node.image_refs["pause"]}],
                "terminationGracePeriodSeconds": 0,
            },
        }
        created = node.kubectl("apply", "-f", "-", input_text=json.dumps(pod))
        assert created.returncode == 0, created.stderr
        ready = node.kubectl(
            "-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s"
        )
        assert ready.returncode == 0, ready.stderr
        self.ip = self._field("{.status.podIP}")
        container = self._field("{.status.containerStatuses[0].containerID}").split("//")[-1]
        pid = wait_until(
            lambda: host.container_init_pid(container), timeout=10, what=f"{name}'s process"
        )
        self.net_path = f"/proc/{pid}/ns/net"
        self.dialer = Dialer(self.net_path)

    def _field(self, jsonpath: str) -> str:
        got = self.node.kubectl(
            "-n", self.namespace, "get", "pod", self.name, "-o", f"jsonpath={jsonpath}"
        )
        assert got.returncode == 0, got.stderr
        return got.stdout

    def http(self, host_name: str, port: int, path: str = "/", *, timeout: float = 5) -> HttpAnswer:
        """One GET from the pod."""
        return http_get(self.dialer, host_name, port, path, timeout=timeout)

    def connects(self, host_name: str, port: int, *, timeout: float = 2) -> bool:
        """Whether a TCP connection from the pod is accepted within timeout (a policy's drop
        shows as a timeout, its reject as a refusal: both are False).
        """
        try:
            self.dialer.connect((host_name, port), timeout=timeout).close()
        except (OSError, TimeoutError):
            return False
        return True

    def close(self) -> None:
        """Let the joined thread end (the pod goes with its namespace)."""
        self.dialer.close()
