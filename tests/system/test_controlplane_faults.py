"""Faults only a real control plane can stage: rotated tokens, an API server that dies,
RBAC taken away and given back, the Service deleted and recreated.

Each test has a namespace of its own with the base's ServiceAccount, Role, RoleBinding and
Service; the tests play the kubelet for bare pods (controlplane/kubelet.py).
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from controlplane import kubelet
from controlplane.objects import install_base_service, kustomize
from support.kubelet_volume import write_volume
from support.polling import wait_until
from support.sidecar_process import in_cluster_prefix

if TYPE_CHECKING:
    from pathlib import Path

    from controlplane.cluster import ControlPlane
    from controlplane.sidecars import PlaneSidecars
    from support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.controlplane


def ready_pod(plane: ControlPlane, namespace: str, name: str, ip: str) -> None:
    """A pod of the Service, scheduled and reported Ready at ip."""
    kubelet.run_ready_pod(plane.rest, namespace, name, ip)


def serving_one_pod(
    plane: ControlPlane,
    sidecars: PlaneSidecars,
    folder: Path,
    *,
    namespace: str,
    ip: str,
    extra_env: dict[str, str] | None = None,
) -> tuple[Path, SidecarProcess]:
    """The base's Service in namespace with one ready pod at ip, and a sidecar (as the
    ServiceAccount) whose page lists it; the kubeconfig and the sidecar.
    """
    install_base_service(plane, namespace)
    ready_pod(plane, namespace, "web-1", ip)
    kubeconfig = plane.kubeconfig_for(folder / "sa.kubeconfig", namespace, "podlister")
    sidecar = sidecars.start(kubeconfig, namespace=namespace, extra_env=extra_env)
    sidecar.wait_page([ip], timeout=20)
    return kubeconfig, sidecar


def slice_addresses(plane: ControlPlane, namespace: str) -> list[str]:
    """Every address in the Service's EndpointSlices, as the API has them now."""
    slices = plane.rest.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        "?labelSelector=kubernetes.io/service-name=podlister"
    )["items"]
    return [a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]]


def logged_at(record: dict[str, Any]) -> float:
    """A log record's timestamp, in seconds since the epoch."""
    return dt.datetime.fromisoformat(record["timestamp"]).timestamp()


def secret(plane: ControlPlane, namespace: str, name: str) -> None:
    plane.rest.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}},
    )


def test_rotated_token_costs_one_backoff_step_not_a_minute(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """In-cluster, with the token folder written as the kubelet writes it: the token is
    swapped (..data symlink) and the old one invalidated by deleting the Secret it was bound
    to. The first 401 makes the sidecar read the token again, and it is back within 2 s of
    that 401 (the official client alone re-reads only every 60 s).
    """
    namespace = "rotation"
    install_base_service(control_plane, namespace)
    for name in ("bound-1", "bound-2"):
        secret(control_plane, namespace, name)
    tokens = tmp_path / "serviceaccount"
    tokens.mkdir()
    common = {"ca.crt": control_plane.ca_file.read_text(), "namespace": namespace}
    first = control_plane.token_for(namespace, "podlister", bound_to_secret="bound-1")
    write_volume(tokens, "v1", {**common, "token": first})
    sidecar = sidecars.start(
        tmp_path / "unused-kubeconfig",
        namespace=namespace,
        # Watches of 2-4 s, so new requests (and the 401) come soon after the rotation.
        extra_env={
            "KUBERNETES_SERVICE_HOST": control_plane.host,
            "KUBERNETES_SERVICE_PORT": str(control_plane.port),
            "PODLISTER_WATCH_TIMEOUT": "4",
        },
        command_prefix=in_cluster_prefix(tokens),
    )
    sidecar.wait_addresses([], timeout=20)

    second = control_plane.token_for(namespace, "podlister", bound_to_secret="bound-2")
    write_volume(tokens, "v2", {**common, "token": second})
    control_plane.rest.delete(f"/api/v1/namespaces/{namespace}/secrets/bound-1")
    refused = wait_until(
        lambda: [e for e in sidecar.events("api_error") if e["kind"] == "unauthorized"],
        timeout=40,
        what="a 401 for the invalidated token",
    )[0]
    ready_pod(control_plane, namespace, "web-1", "10.244.2.1")
    sidecar.wait_addresses(["10.244.2.1"], timeout=20)
    resumed = next(e for e in sidecar.events("watch_start") if logged_at(e) > logged_at(refused))
    assert logged_at(resumed) - logged_at(refused) <= 2.0
    assert len([e for e in sidecar.events("api_error") if e["kind"] == "unauthorized"]) == 1


def document(sidecar: SidecarProcess) -> dict[str, Any]:
    return dict(json.loads((sidecar.output_dir / "index.json").read_text()))


def test_api_server_outage_keeps_every_pod_ready(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """kube-apiserver SIGKILLed for longer than 3 idle timeouts, one sidecar restarted during
    the outage: every sidecar stays live and ready serving its last page, marked stale;
    retries during the outage are bounded by the backoff; after the server returns, every
    page follows a new pod within one backoff step.
    """
    namespace = "outage"
    settings = {"PODLISTER_IDLE_TIMEOUT": "2"}
    kubeconfig, first = serving_one_pod(
        control_plane, sidecars, tmp_path, namespace=namespace, ip="10.244.3.1", extra_env=settings
    )
    running = [first, sidecars.start(kubeconfig, namespace=namespace, extra_env=settings)]
    running[1].wait_page(["10.244.3.1"], timeout=20)

    control_plane.kill_apiserver()
    down_at = time.monotonic()
    try:
        running[1].stop()
        running[1] = sidecars.start(
            kubeconfig, namespace=namespace, extra_env=settings, output_dir=running[1].output_dir
        )
        # Its startupProbe: the restarted sidecar serves the page it finds, without the API.
        wait_until(lambda: running[1].probe("/readyz") == 200, timeout=15, what="restarted")
        # 3 x idle timeout is 6 s; stay down for 10, probing all along as a kubelet would.
        while time.monotonic() - down_at < 10:
            for sidecar in running:
                assert sidecar.probe("/healthz") == 200
                assert sidecar.probe("/readyz") == 200
            time.sleep(0.5)  # the probe period: what is checked is the state at each probe
        for sidecar in running:
            assert document(sidecar)["addresses"] == ["10.244.3.1"]
            sidecar.wait_file(
                "index.json", lambda text: json.loads(text)["stale_since"] is not None
            )
    finally:
        control_plane.start_apiserver()
    back_at = time.time()
    # 0.8 s doubling, with 25 % jitter: about 5 attempts in 10 s, never a tight loop.
    assert len(running[0].events("api_error")) <= 8
    for sidecar in running:
        # Back within one backoff step of the server's return: the longest step a 10 s
        # outage reaches is 12.8 s x 1.25 (jitter), 2 s more for a loaded machine.
        reached = wait_until(
            lambda s=sidecar: s.events("api_reachable"),  # type: ignore[misc]
            timeout=30,
            what="the sidecar back on the API",
        )[-1]
        assert logged_at(reached) - back_at < 16 + 2
    ready_pod(control_plane, namespace, "web-2", "10.244.3.2")
    for sidecar in running:
        # The controller manager has its own way back to the API: its pace, not ours.
        sidecar.wait_page(["10.244.3.1", "10.244.3.2"], timeout=60)
        sidecar.wait_file("index.json", lambda text: json.loads(text)["stale_since"] is None)


def test_rbac_taken_away_and_given_back(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """The RoleBinding deleted: the next watch gets 403, logged once for the streak, and the
    page stays; restored: the sidecar converges by itself.
    """
    namespace = "rbac-gone"
    install_base_service(control_plane, namespace)
    kubeconfig = control_plane.kubeconfig_for(tmp_path / "sa.kubeconfig", namespace, "podlister")
    sidecar = sidecars.start(
        kubeconfig, namespace=namespace, extra_env={"PODLISTER_WATCH_TIMEOUT": "4"}
    )
    sidecar.wait_addresses([], timeout=20)
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    binding = next(o for o in kustomize("k8s") if o["kind"] == "RoleBinding")
    binding["metadata"]["namespace"] = namespace
    binding["subjects"][0]["namespace"] = namespace
    control_plane.rest.delete(f"{rbac}/{binding['metadata']['name']}")
    wait_until(
        lambda: sidecar.metric("podlister_errors_total", kind="forbidden") >= 2,
        timeout=40,
        what="refused requests",
    )
    assert len(sidecar.events("forbidden")) == 1
    assert document(sidecar)["addresses"] == []
    assert sidecar.probe("/readyz") == 200
    control_plane.rest.post(rbac, binding)
    ready_pod(control_plane, namespace, "web-1", "10.244.4.1")
    sidecar.wait_addresses(["10.244.4.1"], timeout=45)


def test_service_deleted_and_recreated(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """Deleting the Service removes its slices: the page empties. Recreated, its new slices
    list the ready pod again.
    """
    namespace = "service-gone"
    _, sidecar = serving_one_pod(
        control_plane, sidecars, tmp_path, namespace=namespace, ip="10.244.5.1"
    )
    service = next(o for o in kustomize("k8s") if o["kind"] == "Service")
    service["metadata"]["namespace"] = namespace
    control_plane.rest.delete(f"/api/v1/namespaces/{namespace}/services/podlister")
    sidecar.wait_addresses([], timeout=30)
    control_plane.rest.post(f"/api/v1/namespaces/{namespace}/services", service)
    sidecar.wait_addresses(["10.244.5.1"], timeout=30)


@pytest.mark.timeout(300)
def test_paused_sidecar_relists_on_410_from_the_real_server(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """A sidecar paused (SIGSTOP) while the API server restarts, a pod turns ready and etcd
    is compacted: its resume point is gone (older than the compacted revision and than the new
    server's watch cache), the server answers 410, and on SIGCONT the sidecar relists and
    shows the pod.
    """
    namespace = "paused"
    _, sidecar = serving_one_pod(
        control_plane, sidecars, tmp_path, namespace=namespace, ip="10.244.6.1"
    )
    sidecar.signal(signal.SIGSTOP)
    try:
        # A write the sidecar does not watch moves the revision past its resume point: else
        # the new server's watch cache would start exactly there and could serve it.
        control_plane.rest.post(
            f"/api/v1/namespaces/{namespace}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "moves-the-revision"}},
        )
        # The restart cuts the paused sidecar's stream: nothing after this reaches it.
        control_plane.kill_apiserver()
        control_plane.start_apiserver()
        ready_pod(control_plane, namespace, "web-2", "10.244.6.2")
        wait_until(
            lambda: len(slice_addresses(control_plane, namespace)) == 2,
            # After the restart the controller manager reconnects at its own pace: its
            # reflectors back off up to 30 s, and an earlier outage test may have left them
            # there (seen once in a loaded run: not done within 60 s).
            timeout=150,
            what="the controller writing web-2 into the slice",
        )
        control_plane.compact_etcd()
    finally:
        sidecar.signal(signal.SIGCONT)
    sidecar.wait_page(["10.244.6.1", "10.244.6.2"], timeout=30)
    sidecar.wait_metric("podlister_watch_restarts_total", 1, reason="expired")
    sidecar.wait_metric("podlister_lists_total", 2, api="endpointslices")
