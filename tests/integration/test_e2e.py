"""End to end on the local cluster: load balancer -> real nginx -> pages the real sidecars write."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from localcluster import LocalCluster


def through_lb(cluster: LocalCluster, requests: int) -> dict[str, list[str]]:
    """Send requests through the load balancer; the list each pod (by X-Pod-IP) served."""
    seen: dict[str, list[str]] = {}
    for _ in range(requests):
        with urllib.request.urlopen(cluster.lb.url + "/", timeout=5) as response:  # noqa: S310
            seen[response.headers["X-Pod-IP"]] = response.read().decode().split()
    return seen


def assert_every_replica_serves_the_ready_set(cluster: LocalCluster) -> None:
    cluster.wait_converged(timeout=10)
    expected = cluster.ready_ips()
    seen = through_lb(cluster, 4 * len(expected))
    assert sorted(seen) == sorted(expected), "the load balancer must reach every ready pod"
    for pod_ip, listed in seen.items():
        assert listed == expected, pod_ip


@pytest.mark.timeout(240)
def test_scale_up_and_down(cluster: LocalCluster) -> None:
    """After each scale step (3, 6, 2) every replica, reached through the load balancer,
    serves exactly the set of ready pods.
    """
    for replicas in (3, 6, 2):
        cluster.scale_to(replicas)
        assert len(cluster.ready_ips()) == replicas
        assert_every_replica_serves_the_ready_set(cluster)


@pytest.mark.timeout(240)
def test_killed_pod_disappears_everywhere(cluster: LocalCluster) -> None:
    """A crashed pod leaves every other pod's page."""
    cluster.scale_to(4)
    victim = cluster.pods[2]
    cluster.kill_pod(victim)
    assert victim.ip not in cluster.ready_ips()
    assert_every_replica_serves_the_ready_set(cluster)


@pytest.mark.timeout(240)
def test_no_errors_through_the_lb_during_scale_down(cluster: LocalCluster) -> None:
    """While pods are removed, every request through the load balancer succeeds."""
    cluster.scale_to(5)
    stop = threading.Event()
    outcomes: list[int] = []

    def hammer() -> None:
        while not stop.is_set() and len(outcomes) < 20_000:
            try:
                with urllib.request.urlopen(cluster.lb.url + "/", timeout=5) as response:  # noqa: S310
                    response.read()
                    outcomes.append(response.status)
            except urllib.error.HTTPError as exc:
                outcomes.append(exc.code)
            except OSError:
                outcomes.append(0)

    client = threading.Thread(target=hammer)
    client.start()
    try:
        cluster.scale_to(2)
    finally:
        stop.set()
        client.join(timeout=30)
    assert len(outcomes) > 50, "the client must have run during the scale-down"
    assert set(outcomes) == {200}, f"{len([o for o in outcomes if o != 200])} failed requests"
    assert_every_replica_serves_the_ready_set(cluster)
