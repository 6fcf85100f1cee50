"""The monitoring component: the README's line turns it on, its objects validate against the
Prometheus Operator's CRDs, promtool holds every alert to a case where it fires and one where
it must not, and the dashboard asks only for metrics a real sidecar exports.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from kubestub import endpoint, endpoint_slice
from support import documented

if TYPE_CHECKING:
    from collections.abc import Callable

    from kubestub import ApiStandIn
    from support.sidecar_process import SidecarProcess

REPO = Path(__file__).resolve().parents[2]
COMPONENT = REPO / "kustomize" / "components" / "monitoring"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "monitoring" / "alerts_test.yaml"
Doc = dict[str, Any]


def promtool() -> str:
    """Debian's promtool (the prometheus package; .ci/run installs it)."""
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus"
    return found


@pytest.fixture(scope="module")
def mine(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """A user's overlay made as the README says (copy the example, the one-line sed), rendered."""
    copy = tmp_path_factory.mktemp("repo")
    for folder in ("k8s", "kustomize"):
        shutil.copytree(REPO / folder, copy / folder)
    for command in (documented.MINE, documented.MONITORING):
        subprocess.run(["bash", "-c", command], cwd=copy, check=True, timeout=30)
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(copy / "kustomize" / "overlays" / "mine")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def one(objects: list[Doc], kind: str) -> Doc:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_monitoring_turns_on_with_the_readmes_line(mine: list[Doc]) -> None:
    """The README's two commands (copy the example, uncomment the component) give an overlay
    with the PodMonitor, the PrometheusRule and the dashboard in the app's namespace; the
    PodMonitor selects the Deployment's pods and names a port their spec has (the sidecar's,
    a native sidecar, so an init container); the NetworkPolicy lets in `monitoring`.
    """
    monitor = one(mine, "PodMonitor")
    deployment = one(mine, "Deployment")
    template = deployment["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    spec = template["spec"]
    ports = {
        port["name"]
        for container in spec["initContainers"] + spec["containers"]
        for port in container.get("ports", [])
    }
    (endpoint_spec,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint_spec["port"] in ports
    assert endpoint_spec["path"] == "/metrics"
    assert one(mine, "PrometheusRule")["spec"]["groups"]
    (dashboard,) = [o for o in mine if o["metadata"]["name"] == "podlister-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["podlister.json"])["uid"] == "podlister"
    for obj in mine:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "podlister", obj["kind"]
    rules = one(mine, "NetworkPolicy")["spec"]["ingress"]
    scrape = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert {"from": [scrape], "ports": [{"port": 8081, "protocol": "TCP"}]} in rules


def test_the_objects_validate_against_the_operators_crds(mine: list[Doc], tmp_path: Path) -> None:
    """Kubeconform -strict accepts every object of the overlay: the Kubernetes kinds against
    the newest schemas we claim, the PodMonitor and PrometheusRule against schemas made from
    the Prometheus Operator's CRDs (its Go module); nothing skipped.
    """
    from linters import build, local_schemas, operator_schemas

    spec = importlib.util.find_spec("kubernetes_validate")
    assert spec is not None, "kubernetes-validate (its schemas) is not installed"
    assert spec.origin is not None
    validate = Path(spec.origin).parent / "kubernetes-json-schema"
    version = "1.37.0"
    builtin = local_schemas(validate, version)
    operator = operator_schemas()
    manifest = tmp_path / "mine.yaml"
    manifest.write_text(yaml.safe_dump_all(mine))
    crd_location = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
    result = subprocess.run(
        [
            str(build() / "kubeconform"),
            "-strict",
            "-summary",
            f"-kubernetes-version={version}",
            f"-schema-location={builtin}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            f"-schema-location={operator}/{crd_location}",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Valid: {len(mine)}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


@pytest.fixture
def rule_files(mine: list[Doc], tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file, promtool's tests beside it."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(one(mine, "PrometheusRule")["spec"]))
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    return tmp_path


def test_promtool_checks_the_rules_and_each_alert_has_both_cases(rule_files: Path) -> None:
    """`promtool check rules` accepts the rules, and promtool's tests hold every alert to at
    least one evaluation where it fires and one where it must not.
    """
    checked = subprocess.run(
        [promtool(), "check", "rules", str(rule_files / "rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    groups = yaml.safe_load((rule_files / "rules.yaml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert f"SUCCESS: {len(alerts)} rules found" in checked.stdout
    cases = [
        case
        for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for alert in alerts:
        fires = [c for c in cases if c["alertname"] == alert and c["exp_alerts"]]
        quiet = [c for c in cases if c["alertname"] == alert and not c["exp_alerts"]]
        assert fires, f"{alert} is never expected to fire"
        assert quiet, f"{alert} is never expected to stay quiet"


def test_every_alert_fires_and_stays_quiet_as_promtool_tests_it(rule_files: Path) -> None:
    """`promtool test rules`: each alert fires with its labels and its annotations rendered
    (summary, description, runbook) where it should, and not where it must not: a rolling
    update's replicas a scrape apart, an API back within 3 minutes, one failed write, a
    template fixed within the minute, a pod ready after 2 minutes, timeouts of a healthy watch.
    """
    tested = subprocess.run(
        [promtool(), "test", "rules", str(rule_files / PROMTOOL_TESTS.name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_every_runbook_link_has_its_section() -> None:
    """Each alert's runbook_url names a section docs/runbook.md has, and each alert has one."""
    rule = yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())
    runbook = (REPO / "docs" / "runbook.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\w+)$", runbook, re.MULTILINE)
    anchors = {f"docs/runbook.md#{heading.lower()}" for heading in headings}
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert alert["annotations"]["runbook_url"] in anchors, alert["alert"]


def exported_names(metrics_text: str) -> set[str]:
    """Every series name /metrics can hold, from its TYPE lines (a labelled metric shows no
    sample before its first label value, but always its TYPE).
    """
    names = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, re.MULTILINE):
        names.add(name)
        names.update(name + suffix for suffix in suffixes.get(kind, ()))
    return names


def test_the_dashboard_asks_only_for_what_the_sidecar_exports(
    mine: list[Doc],
    api: ApiStandIn,
    start_sidecar: Callable[..., SidecarProcess],
    tmp_path: Path,
) -> None:
    """Every query of the dashboard is PromQL promtool accepts, and every metric it names is
    one a real sidecar's /metrics declares.
    """
    (dashboard,) = [o for o in mine if o["metadata"]["name"] == "podlister-dashboard"]
    panels = json.loads(dashboard["data"]["podlister.json"])["panels"]
    queries = [target["expr"] for panel in panels for target in panel["targets"]]
    assert len(queries) >= 6
    recorded = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": q.replace("$namespace", "podlister")}
                    for n, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(recorded))
    checked = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "queries.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    exported = exported_names(sidecar.metrics_text())
    named = {n for q in queries for n in re.findall(r"\b((?:podlister|process)_\w+)", q)}
    assert named, queries
    assert named <= exported, named - exported
