"""What only a real API server proves: schemas, admission, RBAC and the real controllers.

The control plane (kube-apiserver, kube-controller-manager, etcd) is built from Go modules
by tests/controlplane and runs on loopback for the whole session. The tests play the
scheduler and the kubelet (controlplane/kubelet.py): nothing else runs pods.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from controlplane import kubelet
from controlplane.objects import (
    REPO,
    bare_pod,
    ensure_namespace,
    install_base_service,
    kustomize,
)
from controlplane.rest import ApiError
from support.kubelet_volume import write_volume
from support.polling import wait_until
from support.ports import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from controlplane.cluster import ControlPlane
    from controlplane.sidecars import PlaneSidecars

pytestmark = pytest.mark.controlplane

NAMESPACE = "podlister"  # the base's namespace
SELECTOR = "app.kubernetes.io/name=podlister"


@pytest.mark.parametrize("folder", ["k8s", "kustomize/overlays/do", "kustomize/overlays/local"])
def test_manifests_pass_server_side_dry_run(control_plane: ControlPlane, folder: str) -> None:
    """Every object of the base and of each overlay is accepted by a real API server's
    schemas, defaulting and admission (server-side apply, dry run).
    """
    # A dry run creates nothing, so the namespace its objects go into must exist already.
    namespace = REPO / "k8s" / "namespace.yaml"
    assert control_plane.kubectl("apply", "--server-side", "-f", str(namespace)).returncode == 0
    result = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "-k", folder)
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(kustomize(folder)), result.stdout


def pod_from_template(overlay: str) -> dict[str, Any]:
    """A Pod with exactly the Deployment's pod template, as the ReplicaSet controller makes."""
    deployment = next(o for o in kustomize(overlay) if o["kind"] == "Deployment")
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "template-check", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def test_pod_template_is_admitted_under_restricted(control_plane: ControlPlane) -> None:
    """The pod template passes PodSecurity admission at `restricted`; a copy with one
    container allowed to escalate privileges is refused, so the check is really enforced.
    """
    namespace = "restricted-check"
    ensure_namespace(control_plane, namespace, {"pod-security.kubernetes.io/enforce": "restricted"})
    pod = pod_from_template("kustomize/overlays/do")
    control_plane.rest.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "podlister"}},
    )
    path = f"/api/v1/namespaces/{namespace}/pods?dryRun=All"
    admitted = control_plane.rest.post(path, pod)
    assert admitted["metadata"]["name"] == "template-check"

    escalating = copy.deepcopy(pod)
    escalating["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(ApiError, match="violates PodSecurity") as refused:
        control_plane.rest.post(path, escalating)
    assert refused.value.status == 403


@pytest.fixture
def empty_namespace(control_plane: ControlPlane) -> str:
    """The base's namespace with no Deployment and no pods left from an earlier test."""
    ensure_namespace(control_plane, NAMESPACE)
    rest = control_plane.rest
    with contextlib.suppress(ApiError):
        rest.request(
            "DELETE",
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/podlister",
            {"propagationPolicy": "Background"},
        )
    wait_until(
        lambda: not rest.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets")["items"],
        timeout=30,
        what="the garbage collector removing the ReplicaSets",
    )
    # Without a kubelet to confirm, a graceful deletion would wait 30 s: force it.
    for pod in rest.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]:
        with contextlib.suppress(ApiError):
            kubelet.delete(rest, NAMESPACE, pod["metadata"]["name"])
    wait_until(
        lambda: not rest.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"],
        timeout=30,
        what="no pods left",
    )
    return NAMESPACE


@pytest.mark.usefixtures("empty_namespace")
def test_sidecar_follows_the_real_endpointslice_controller(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """Deployed from the base and authenticated as its ServiceAccount (only its Role), the
    sidecar lists and watches the slices the real controller writes: pods turning ready
    appear, a pod turning not-ready and a deleted pod disappear.
    """
    applied = control_plane.kubectl("apply", "--server-side", "-k", str(REPO / "k8s"))
    assert applied.returncode == 0, applied.stderr
    kubelet.register_node(control_plane.rest)

    # The Deployment's ReplicaSet creates the pods; nothing schedules or runs them yet.
    def two_pods() -> list[dict[str, Any]]:
        found = kubelet.pods(control_plane.rest, NAMESPACE, SELECTOR)
        return found if len(found) == 2 else []

    pods = wait_until(two_pods, timeout=30, what="the Deployment's two pods")
    kubeconfig = control_plane.kubeconfig_for(tmp_path / "sa.kubeconfig", NAMESPACE, "podlister")
    sidecar = sidecars.start(kubeconfig, namespace=NAMESPACE)
    sidecar.wait_addresses([], timeout=20)

    names = [pod["metadata"]["name"] for pod in pods]
    ips = ["10.244.0.11", "10.244.0.12"]
    for name, ip in zip(names, ips, strict=True):
        kubelet.bind(control_plane.rest, NAMESPACE, name)
        kubelet.report(control_plane.rest, NAMESPACE, name, ip=ip, ready=True)
    sidecar.wait_addresses(ips, timeout=20)

    kubelet.report(control_plane.rest, NAMESPACE, names[0], ip=ips[0], ready=False)
    sidecar.wait_addresses(ips[1:], timeout=20)

    kubelet.delete(control_plane.rest, NAMESPACE, names[1])
    sidecar.wait_addresses([], timeout=20)

    sidecar.wait_metric("podlister_lists_total", 1, api="endpointslices")
    assert not sidecar.events("forbidden")
    assert not sidecar.events("api_error")


def test_a_role_without_watch_gets_the_clear_403_log(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """With a Role that grants get and list but not watch, the real server refuses the
    watch, and the sidecar logs once which ServiceAccount lacks which verb on what.
    """
    namespace = "no-watch"
    ensure_namespace(control_plane, namespace)
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + namespace
    control_plane.rest.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
    )
    control_plane.rest.post(
        f"{rbac}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader"},
            "rules": [
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list"],
                }
            ],
        },
    )
    control_plane.rest.post(
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    # The API server's authorizer learns of the new binding from its own watch: on a busy
    # machine the sidecar's list could come first and be refused too. Start once it can list.
    account = f"system:serviceaccount:{namespace}:reader"
    wait_until(
        lambda: (
            control_plane.kubectl(
                "auth",
                "can-i",
                "list",
                "endpointslices.discovery.k8s.io",
                "-n",
                namespace,
                "--as",
                account,
            ).stdout.strip()
            == "yes"
        ),
        timeout=30,
        what="the Role in force",
    )
    kubeconfig = control_plane.kubeconfig_for(tmp_path / "reader.kubeconfig", namespace, "reader")
    sidecar = sidecars.start(kubeconfig, namespace=namespace)

    forbidden = wait_until(lambda: sidecar.events("forbidden"), timeout=20, what="a 403 log")[0]
    assert forbidden["service_account"] == f"system:serviceaccount:{namespace}:reader"
    assert forbidden["verb"] == "watch"
    assert forbidden["resource"] == "endpointslices.discovery.k8s.io"
    # The list was allowed: its page is written, and stays, while the watch is refused. (The
    # publisher thread writes it; the watch thread can log the 403 first on a busy machine.)
    sidecar.wait_addresses([], timeout=20)
    wait_until(
        lambda: sidecar.metric("podlister_errors_total", kind="forbidden") >= 2,
        timeout=20,
        what="a second refused watch after backoff",
    )
    assert sidecar.addresses() == []
    assert len(sidecar.events("forbidden")) == 1


def test_watch_timeouts_and_bookmarks_come_from_the_real_server(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """Watches the real server ends at the timeout the sidecar asked for are resumed from
    their resourceVersion without a relist, the server's bookmarks are read, and a pod
    that turns ready afterwards still appears.
    """
    namespace = "timeouts"
    install_base_service(control_plane, namespace)
    kubeconfig = control_plane.kubeconfig_for(tmp_path / "sa.kubeconfig", namespace, "podlister")
    sidecar = sidecars.start(
        kubeconfig,
        namespace=namespace,
        # Watches of 5-10 s. The server's watch cache sends a bookmark 2 s before a
        # watch's deadline (else about every minute), once it has seen any slice event;
        # the idle timeout is longer than a watch, as 90 s is longer than that minute.
        extra_env={"PODLISTER_WATCH_TIMEOUT": "10", "PODLISTER_IDLE_TIMEOUT": "30"},
    )
    sidecar.wait_addresses([], timeout=20)
    listed_at = int(sidecar.events("list")[0]["resource_version"])
    # The server sends a bookmark only when it moves a watch's resourceVersion forward,
    # that is after a change to any EndpointSlice, here one in another namespace.
    ensure_namespace(control_plane, "elsewhere")
    control_plane.rest.post(
        "/apis/discovery.k8s.io/v1/namespaces/elsewhere/endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"generateName": "unrelated-"},
            "addressType": "IPv4",
            "endpoints": [],
        },
    )
    wait_until(
        lambda: sidecar.metric("podlister_watch_restarts_total", reason="timeout") >= 2,
        timeout=40,
        what="two watches ended by the server's timeout",
    )
    assert sidecar.metric("podlister_watch_events_total", type="BOOKMARK") >= 1
    resumed_from = int(sidecar.events("watch_start")[-1]["resource_version"])
    assert resumed_from > listed_at, "a bookmark should have moved the resume point forward"

    kubelet.register_node(control_plane.rest)
    control_plane.rest.post(f"/api/v1/namespaces/{namespace}/pods", bare_pod("web-1"))
    kubelet.bind(control_plane.rest, namespace, "web-1")
    kubelet.report(control_plane.rest, namespace, "web-1", ip="10.244.1.1", ready=True)
    sidecar.wait_addresses(["10.244.1.1"], timeout=20)
    sidecar.wait_metric("podlister_lists_total", 1, api="endpointslices")


def test_local_overlay_runs_on_the_real_control_plane(
    control_plane: ControlPlane, empty_namespace: str, tmp_path: Path
) -> None:
    """`kubectl apply -k kustomize/overlays/local` and `kubectl scale` drive real nginx and
    sidecar processes (the test's node plays kubelet): after each scale, the load balancer
    and every pod serve exactly the pods the API reports ready.
    """
    from controlplane.node import ProcessNode, ServiceProxy, converged
    from support.loadbalancer import LoadBalancer

    applied = control_plane.kubectl(
        "apply", "--server-side", "-k", str(REPO / "kustomize" / "overlays" / "local")
    )
    assert applied.returncode == 0, applied.stderr
    lb = LoadBalancer(tmp_path / "lb", f"127.0.0.1:{free_port()}").start()
    node = ProcessNode(control_plane, tmp_path / "node", empty_namespace).start()
    proxy = ServiceProxy(control_plane, lb, empty_namespace, "podlister").start()
    try:
        wait_until(lambda: converged(node, lb, 2), timeout=60, what="the overlay's 2 replicas")
        for replicas in (4, 1):
            scaled = control_plane.kubectl(
                "scale", "deployment/podlister", "-n", empty_namespace, f"--replicas={replicas}"
            )
            assert scaled.returncode == 0, scaled.stderr
            wait_until(
                lambda n=replicas: converged(node, lb, n),  # type: ignore[misc]
                timeout=60,
                what=f"{replicas} replicas",
            )
    finally:
        proxy.stop()
        node.stop()
        lb.stop()


def hpa_conditions(control_plane: ControlPlane, namespace: str) -> dict[str, str]:
    hpa = control_plane.rest.get(
        f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/podlister"
    )
    conditions = (hpa.get("status") or {}).get("conditions") or []
    return {c["type"]: c["status"] for c in conditions}


@pytest.mark.usefixtures("empty_namespace")
def test_do_overlay_hpa_finds_and_can_scale_its_deployment(control_plane: ControlPlane) -> None:
    """`kubectl apply -k kustomize/overlays/do` from a context whose namespace is "default"
    puts the HPA beside the Deployment, and the real HPA controller reports AbleToScale=True
    (it found its target and can read and write its scale; no metrics are needed for that).
    """
    applied = control_plane.kubectl(
        "apply", "--server-side", "-k", str(REPO / "kustomize" / "overlays" / "do")
    )
    assert applied.returncode == 0, applied.stderr
    base = f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/podlister"
    try:
        assert not control_plane.rest.get(
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
        )["items"]
        wait_until(
            lambda: hpa_conditions(control_plane, NAMESPACE).get("AbleToScale") == "True",
            timeout=30,
            what="AbleToScale=True",
        )
    finally:
        # Later tests apply the base: no HPA may scale their Deployment, and the Service
        # goes back to the base's ClusterIP.
        control_plane.rest.delete(base)
        control_plane.rest.delete(f"/api/v1/namespaces/{NAMESPACE}/services/podlister")


def test_example_overlay_keeps_its_template_through_a_second_apply(
    control_plane: ControlPlane, tmp_path: Path, sidecars: PlaneSidecars
) -> None:
    """`kubectl apply -k` of the example overlay (the do overlay as its base; the page template
    from a configMapGenerator with behavior: replace), twice: the ConfigMap still holds the
    custom template (a hand-made change was emptied by the next apply of the base), a sidecar
    given that ConfigMap as its template folder serves the custom page, and the replica
    range, CPU target and image are the overlay's.
    """
    namespace = "example-overlay"
    # The overlay as a user copies it, applied into a namespace of this test's own, so that
    # the other tests' objects in the base's namespace are not touched.
    for folder in ("k8s", "kustomize"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "kustomization.yaml").write_text(
        f"namespace: {namespace}\nresources:\n  - ../kustomize/overlays/example\n",
        encoding="utf-8",
    )
    rest = control_plane.rest
    try:
        for _ in range(2):
            applied = control_plane.kubectl("apply", "-k", str(wrapper))
            assert applied.returncode == 0, applied.stderr
        page = rest.get(f"/api/v1/namespaces/{namespace}/configmaps/podlister-page")
        template = (REPO / "kustomize/overlays/example/index.html.j2").read_text(encoding="utf-8")
        assert page["data"] == {"index.html.j2": template}
        hpa = rest.get(
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/podlister"
        )["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
        assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
        deployment = rest.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/podlister")
        images = [c["image"] for c in deployment["spec"]["template"]["spec"]["initContainers"]]
        assert images[0].startswith("registry.example.com/podlister-sidecar@sha256:")

        templates = tmp_path / "page"
        templates.mkdir()
        write_volume(templates, "v1", page["data"])
        # As the admin: what is under test is the template, not the RBAC (other tests).
        sidecar = sidecars.start(
            control_plane.admin_kubeconfig,
            namespace=namespace,
            extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)},
        )
        sidecar.wait_file("index.html", lambda text: "pods behind podlister</h1>" in text)
    finally:
        with contextlib.suppress(ApiError):
            rest.delete(f"/api/v1/namespaces/{namespace}")
