"""The manifests: they render, validate against Kubernetes 1.31-1.34, pass checkov and
hadolint, and hold the policies scanners do not check.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VARIANTS = {"base": "k8s", "do": "kustomize/overlays/do", "local": "kustomize/overlays/local"}
Doc = dict[str, Any]


def tool(name: str) -> str:
    """A scanner installed next to this Python (the test env), or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed in the test environment (see tox.ini)"
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each variant rendered by `kubectl kustomize` into a file."""
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for name, path in VARIANTS.items():
        result = subprocess.run(
            [tool("kubectl"), "kustomize", str(REPO / path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        files[name] = out / f"{name}.yaml"
        files[name].write_text(result.stdout)
    return files


def docs(rendered: dict[str, Path], variant: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(rendered[variant].read_text()) if d]


def one(objects: list[Doc], kind: str) -> Doc:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[Doc]) -> Doc:
    spec: Doc = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


# The Kubernetes versions we claim: 1.30 (native sidecars on by default since 1.29, the
# preStop sleep action since 1.30) up to the newest kubernetes-validate ships.
VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_validates_strictly(rendered: dict[str, Path], variant: str, version: str) -> None:
    """Every rendered object validates against the version's schema with no warning."""
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", version, str(rendered[variant])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARN" not in output, output
    assert output.count("passed for resource") == len(docs(rendered, variant))


def checkov() -> list[str]:
    """The checkov command, from requirements/checkov.lock (tests/linters)."""
    from linters import checkov as command

    return command()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkov_passes(rendered: dict[str, Path], variant: str) -> None:
    """Checkov (offline) reports no failed check; skips are justified in .checkov.yaml."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [
            *checkov(),
            "--config-file",
            str(REPO / ".checkov.yaml"),
            "-f",
            str(rendered[variant]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed checks: 0" in result.stdout, result.stdout


def test_hadolint_is_clean() -> None:
    """Hadolint finds nothing in the Dockerfile."""
    result = subprocess.run(
        [tool("hadolint"), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_token_only_in_the_sidecar(rendered: dict[str, Path], variant: str) -> None:
    """No automounted token; the projected token volume is mounted by the sidecar alone."""
    spec = pod_spec(docs(rendered, variant))
    assert spec["automountServiceAccountToken"] is False
    volume = next(v for v in spec["volumes"] if "projected" in v)
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 3607
    mounting = [
        c["name"]
        for c in spec["initContainers"] + spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == volume["name"]
    ]
    assert mounting == ["sidecar"]


def test_role_grants_exactly_endpointslice_reads(rendered: dict[str, Path]) -> None:
    """The Role allows get/list/watch on discovery.k8s.io endpointslices and nothing else."""
    objects = docs(rendered, "do")
    assert one(objects, "Role")["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "podlister", "namespace": "podlister"}
    ]


def test_native_sidecar_gates_nginx(rendered: dict[str, Path]) -> None:
    """The sidecar is a native sidecar whose startupProbe waits for the first page."""
    sidecar = pod_spec(docs(rendered, "do"))["initContainers"][0]
    assert sidecar["name"] == "sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"] for e in sidecar["env"]}
    assert {
        "PODLISTER_SERVICE",
        "PODLISTER_OUTPUT_DIR",
        "PODLISTER_POD_IP",
        "PODLISTER_POD_NAME",
    } <= env


def test_page_volume_read_only_in_nginx(rendered: dict[str, Path]) -> None:
    """The page emptyDir: in memory, size-limited, writable by the sidecar, read-only in nginx."""
    spec = pod_spec(docs(rendered, "do"))
    page = next(v for v in spec["volumes"] if v["name"] == "page")
    assert page["emptyDir"]["medium"] == "Memory"
    assert page["emptyDir"]["sizeLimit"]
    nginx = spec["containers"][0]
    sidecar = spec["initContainers"][0]
    assert next(m for m in nginx["volumeMounts"] if m["name"] == "page")["readOnly"] is True
    assert not next(m for m in sidecar["volumeMounts"] if m["name"] == "page").get("readOnly")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_restricted_security_context(rendered: dict[str, Path], variant: str) -> None:
    """Both containers meet "restricted": non-root UID >= 10000, no escalation, drop ALL,
    read-only root, seccomp RuntimeDefault; requests and limits set; sidecar CPU >= 100m.
    """
    spec = pod_spec(docs(rendered, variant))
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] >= 10000
    assert pod["runAsGroup"] >= 10000
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    for container in spec["initContainers"] + spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"], container["name"]
    assert spec["initContainers"][0]["resources"]["limits"]["cpu"] in {
        "100m",
        "200m",
        "250m",
        "500m",
        "1",
    }
    for volume in spec["volumes"]:
        assert set(volume) & {"configMap", "emptyDir", "projected"}, volume["name"]


def test_no_replicas_next_to_the_hpa(rendered: dict[str, Path]) -> None:
    """The do overlay has an autoscaling/v2 HPA with a behavior and no Deployment replicas."""
    objects = docs(rendered, "do")
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert "replicas" not in one(objects, "Deployment")["spec"]
    assert "replicas" in one(docs(rendered, "local"), "Deployment")["spec"]


def test_digitalocean_load_balancer(rendered: dict[str, Path]) -> None:
    """The do overlay's Service is a LoadBalancer whose health check reads /readyz over HTTP,
    with the override annotation DigitalOcean needs to honour it.
    """
    service = one(docs(rendered, "do"), "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    annotations = service["metadata"]["annotations"]
    prefix = "service.beta.kubernetes.io/do-loadbalancer-"
    # The HTTP balancer, not the network (pass-through) default of DOKS >= 1.33, which
    # ignores the protocol and health-check settings.
    assert annotations[prefix + "type"] == "REGIONAL"
    # No fixed name: names are per account and would collide between clusters.
    assert prefix + "name" not in annotations
    assert annotations[prefix + "override-health-check"] == "true"
    assert annotations[prefix + "healthcheck-path"] == "/readyz"
    assert annotations[prefix + "healthcheck-protocol"] == "http"
    assert annotations[prefix + "healthcheck-port"] == "80"
    assert one(docs(rendered, "local"), "Service")["spec"]["type"] == "NodePort"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_selectors_and_labels(rendered: dict[str, Path], variant: str) -> None:
    """Selectors use only app.kubernetes.io/name; every object carries part-of."""
    objects = docs(rendered, variant)
    selector = {"app.kubernetes.io/name": "podlister"}
    assert one(objects, "Deployment")["spec"]["selector"]["matchLabels"] == selector
    assert one(objects, "Service")["spec"]["selector"] == selector
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "podlister", obj["kind"]


def test_images_pinned_and_no_subpath(rendered: dict[str, Path]) -> None:
    """Nginx is pinned by digest; no volume is mounted with subPath (updates must arrive live)."""
    spec = pod_spec(docs(rendered, "do"))
    assert "@sha256:" in spec["containers"][0]["image"]
    for container in spec["initContainers"] + spec["containers"]:
        for mount in container["volumeMounts"]:
            assert "subPath" not in mount, mount


def test_configmap_holds_the_one_nginx_conf(rendered: dict[str, Path]) -> None:
    """The nginx ConfigMap carries k8s/nginx/nginx.conf byte for byte (the file tests run)."""
    configmaps = [o for o in docs(rendered, "do") if o["kind"] == "ConfigMap"]
    nginx = next(c for c in configmaps if c["metadata"]["name"].startswith("podlister-nginx-"))
    assert nginx["data"]["nginx.conf"] == (REPO / "k8s/nginx/nginx.conf").read_text()
    assert nginx["data"]["listen.conf"].strip().endswith("listen 8080;")


SIDECAR_IMAGE = "ghcr.io/podlister/podlister-sidecar"


@pytest.mark.parametrize("variant", ["do", "local"])
def test_every_object_lands_in_the_deployments_namespace(
    rendered: dict[str, Path], variant: str
) -> None:
    """Every namespaced object of an overlay, those added by components too (the HPA), has
    the Deployment's namespace, and the HPA's target is in the render beside it.
    """
    objects = docs(rendered, variant)
    namespace = one(objects, "Deployment")["metadata"]["namespace"]
    cluster_scoped = {"Namespace"}
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == namespace, (obj["kind"], variant)
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert any(
            o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"] for o in objects
        )


def test_an_images_entry_by_the_published_name_changes_the_render(tmp_path: Path) -> None:
    """An images entry by the published name in the do overlay (what `kustomize edit set
    image` or an air-gapped user writes; the release writes one into its image component)
    really changes the rendered image.
    """
    copy = tmp_path / "repo"
    for folder in ("k8s", "kustomize"):
        shutil.copytree(REPO / folder, copy / folder)
    overlay = copy / "kustomize/overlays/do/kustomization.yaml"
    kustomization = yaml.safe_load(overlay.read_text())
    digest = "sha256:" + "ab" * 32
    kustomization["images"] = [
        {"name": SIDECAR_IMAGE, "newName": "registry.example/podlister-sidecar", "digest": digest}
    ]
    overlay.write_text(yaml.safe_dump(kustomization))
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(overlay.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    sidecar = pod_spec(objects)["initContainers"][0]
    assert sidecar["image"] == f"registry.example/podlister-sidecar@{digest}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_spread_over_nodes_with_disk_bounds(rendered: dict[str, Path], variant: str) -> None:
    """Replicas spread over nodes (ScheduleAnyway); both containers request and limit
    ephemeral storage.
    """
    spec = pod_spec(docs(rendered, variant))
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "podlister"}
    for container in spec["initContainers"] + spec["containers"]:
        resources = container["resources"]
        assert "ephemeral-storage" in resources["requests"], container["name"]
        assert "ephemeral-storage" in resources["limits"], container["name"]


@pytest.fixture(scope="module")
def linters() -> Path:
    """kube-score and kubeconform, built from tests/linters/go.mod."""
    from linters import build

    return build()


@pytest.mark.parametrize("variant", ["do", "local"])
def test_kube_score_finds_nothing_critical(
    rendered: dict[str, Path], linters: Path, variant: str
) -> None:
    """kube-score on each overlay's render: no CRITICAL; the checks that do not apply are
    switched off on their object with kube-score's ignore annotation, each with its reason.
    """
    result = subprocess.run(
        [str(linters / "kube-score"), "score", "-o", "ci", str(rendered[variant])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    assert not [line for line in lines if line.startswith("[CRITICAL]")], result.stdout
    assert not [line for line in lines if line.startswith("[WARNING]")], result.stdout


@pytest.mark.parametrize("version", VERSIONS)
def test_kubeconform_strict(rendered: dict[str, Path], linters: Path, version: str) -> None:
    """The kubeconform -strict run accepts every object of every variant for each version we claim,
    against kubernetes-validate's schemas (made local), with no resource skipped.
    """
    from linters import local_schemas

    spec = importlib.util.find_spec("kubernetes_validate")
    assert spec is not None, "kubernetes-validate (its schemas) is not installed"
    assert spec.origin is not None
    schemas = Path(spec.origin).parent / "kubernetes-json-schema"
    folder = local_schemas(schemas, version)
    location = f"{folder}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"
    result = subprocess.run(
        [
            str(linters / "kubeconform"),
            "-strict",
            "-summary",
            f"-kubernetes-version={version}",
            f"-schema-location={location}",
            *(str(path) for path in rendered.values()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    objects = sum(len(docs(rendered, variant)) for variant in rendered)
    assert f"Valid: {objects}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout


def test_local_overlay_gets_node_port_30080(rendered: dict[str, Path]) -> None:
    """The local overlay's Service is a NodePort on 30080, as its header and the README say
    (a patch entry without the protocol did not merge, and the nodePort was dropped).
    """
    service = one(docs(rendered, "local"), "Service")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "nodePort": 30080}
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_port_only_for_labelled_namespaces(rendered: dict[str, Path], variant: str) -> None:
    """Port 8081 (probes and metrics) is open only to namespaces labelled
    podlister/metrics=scrape; the page's port 8080 to everyone; nothing else comes in.
    """
    policy = one(docs(rendered, variant), "NetworkPolicy")
    rules = {r["ports"][0]["port"]: r.get("from") for r in policy["spec"]["ingress"]}
    assert rules == {
        8080: None,
        8081: [{"namespaceSelector": {"matchLabels": {"podlister/metrics": "scrape"}}}],
    }
    assert all(len(r["ports"]) == 1 for r in policy["spec"]["ingress"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_container_that_exits_says_why_in_describe(
    rendered: dict[str, Path], variant: str
) -> None:
    """Both containers fall back to their logs for the termination message: `kubectl describe
    pod` shows a bad setting's one line, not only `Exit Code: 2`.
    """
    spec = pod_spec(docs(rendered, variant))
    for container in spec["initContainers"] + spec["containers"]:
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError", container["name"]


def test_an_overlay_of_your_own_sets_the_image_whatever_the_release_pinned(
    tmp_path: Path,
) -> None:
    """After `tox -e release` has pinned a build into the do overlay's image component, a copy
    of the example overlay (the README's way to keep your settings) still deploys the image
    its own images: entry names (before: silently the release's, the entry matching nothing).
    """
    copy = tmp_path / "repo"
    for folder in ("k8s", "kustomize"):
        shutil.copytree(REPO / folder, copy / folder)
    pinned = copy / "kustomize/overlays/do/image/kustomization.yaml"
    component = yaml.safe_load(pinned.read_text())
    component["images"] = [
        {
            "name": SIDECAR_IMAGE,
            "newName": "released.example/podlister-sidecar",
            "digest": "sha256:" + "cd" * 32,
        }
    ]
    pinned.write_text(yaml.safe_dump(component))
    mine = copy / "kustomize/overlays/mine"
    shutil.copytree(copy / "kustomize/overlays/example", mine)
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(mine)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    wanted = yaml.safe_load((mine / "kustomization.yaml").read_text())["images"][0]
    sidecar = pod_spec(objects)["initContainers"][0]
    assert sidecar["image"] == f"{wanted['newName']}@{wanted['digest']}"
