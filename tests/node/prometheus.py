"""A real Prometheus on the node, given what the monitoring component declares.

Prometheus is built from its Go module (``prometheus_server/go.mod``) with Kubernetes pod
discovery only: Debian's package is built without Kubernetes discovery. No Prometheus
Operator runs here, so its part is played by ``scrape_config``: the scrape
job the Operator generates for a PodMonitor (its relabelling: the pod selector, the named
port, the namespace, pod and container labels, the job), pod discovery reading the node's
API server. The rules are the PrometheusRule's groups with every duration (``for`` and range
windows) divided by ``scale``, so that an alert of 5 minutes fires in 10 s on a 30 times
faster clock; scraping and evaluation run every second. Prometheus runs in the network
namespace of a pod (``node/clients.py``) in the namespace the user's Prometheus would run in,
so its scrapes meet the enforced NetworkPolicy as that Prometheus's would; stopped by pid.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from support import verified_cache as cache
from support.polling import wait_until

if TYPE_CHECKING:
    from node.clients import ClientPod

MODULE = Path(__file__).resolve().parent / "prometheus_server"
PORT = 9090
_DURATION = re.compile(r"^(\d+)([smh])$")
_RANGE = re.compile(r"\[(\d+)([smh])\]")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def build() -> Path:
    """The prometheus binary, built once per go.sum (a verified cache)."""
    go = shutil.which("go")
    assert go, "Prometheus is built with the Go toolchain (>= 1.26)"
    key = hashlib.sha256((MODULE / "go.sum").read_bytes()).hexdigest()[:12]

    def fill(staging: Path) -> None:
        subprocess.run(
            [
                *(go, "build", "-tags", "remove_all_sd,enable_kubernetes_sd"),
                *("-o", f"{staging}/", "github.com/prometheus/prometheus/cmd/prometheus"),
            ],
            cwd=MODULE,
            check=True,
            timeout=1800,
            capture_output=True,
        )

    return cache.filled(cache.root() / f"prometheus-{key}", fill) / "prometheus"


def _label_name(key: str) -> str:
    """A Kubernetes label key as Prometheus's pod discovery names it (non-alphanumerics: _)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def scrape_config(monitor: dict[str, Any], kubeconfig: Path, interval: str) -> dict[str, Any]:
    """The scrape job the Prometheus Operator generates for a PodMonitor with one endpoint."""
    namespace, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {
            "action": "drop",
            "source_labels": ["__meta_kubernetes_pod_phase"],
            "regex": "(Failed|Succeeded)",
        },
    ]
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        label = _label_name(key)
        relabel.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_pod_label_{label}",
                    f"__meta_kubernetes_pod_labelpresent_{label}",
                ],
                "regex": f"({re.escape(value)});true",
            }
        )
    relabel += [
        {
            "action": "keep",
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": endpoint["port"],
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{namespace}/{name}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    return {
        "job_name": f"podMonitor/{namespace}/{name}/0",
        "honor_labels": False,
        "scrape_interval": interval,
        "metrics_path": endpoint.get("path", "/metrics"),
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "namespaces": {"names": [namespace]},
                "kubeconfig_file": str(kubeconfig),
            }
        ],
        "relabel_configs": relabel,
    }


def _scaled(text: str, scale: int) -> str:
    """A duration divided by scale, in seconds (at least 1 s)."""
    found = _DURATION.match(text)
    assert found, f"not a duration this harness scales: {text!r}"
    seconds = int(found.group(1)) * _SECONDS[found.group(2)]
    return f"{max(1, seconds // scale)}s"


def scaled_rules(groups: list[dict[str, Any]], scale: int) -> list[dict[str, Any]]:
    """The rule groups with each ``for`` and each range window divided by scale."""
    out = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            copy = dict(rule)
            copy["expr"] = _RANGE.sub(
                lambda m: f"[{_scaled(m.group(1) + m.group(2), scale)}]", rule["expr"]
            )
            if "for" in rule:
                copy["for"] = _scaled(rule["for"], scale)
            rules.append(copy)
        out.append({**group, "rules": rules})
    return out


class Prometheus:
    """Prometheus inside a pod's network namespace, until stop()."""

    def __init__(
        self, pod: ClientPod, folder: Path, scrape: dict[str, Any], rules: list[Any]
    ) -> None:
        """Write its configuration and rules into folder; nothing runs before start()."""
        self.pod, self.folder = pod, folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(folder / "rules.yaml")],
            "scrape_configs": [scrape],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        """Start it and wait until it answers as ready."""
        with (self.folder / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *("nsenter", f"--net={self.pod.net_path}", "--"),
                    str(build()),
                    f"--config.file={self.folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{PORT}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=60, interval=0.2, what="prometheus ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.folder / "prometheus.log").read_text(errors="replace")
            raise AssertionError(f"prometheus ended:\n{log[-3000:]}")
        return self.pod.http("127.0.0.1", PORT, "/-/ready").status == 200

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; its data."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = self.pod.http("127.0.0.1", PORT, f"/api/v1/{path}{query}")
        body = json.loads(answer.body)
        assert body["status"] == "success", body
        return body["data"]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets, with their labels and health."""
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def firing(self, alert: str) -> list[dict[str, str]]:
        """The labels of each firing instance of the alert."""
        return [
            a["labels"]
            for a in self.api("alerts")["alerts"]
            if a["labels"]["alertname"] == alert and a["state"] == "firing"
        ]

    def stop(self) -> None:
        """Stop it by pid (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
