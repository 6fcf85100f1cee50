"""The manifest linters: kube-score and kubeconform, built from their Go modules (go.mod
here); the schemas kubeconform reads, taken from kubernetes-validate with their ``$ref``s
made local, and made from the Prometheus Operator's CRDs (its Go module); and checkov, from
its own hash lock in a virtualenv of its own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from support import verified_cache as cache

MODULE = Path(__file__).resolve().parent
CHECKOV_LOCK = MODULE.parents[1] / "requirements" / "checkov.lock"
TOOLS = {
    "kube-score": "github.com/zegl/kube-score/cmd/kube-score",
    "kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform",
}


def build() -> Path:
    """The folder holding both binaries, built once per go.sum (a verified cache)."""
    go = shutil.which("go")
    assert go, "the manifest linters are built with the Go toolchain (>= 1.26)"
    key = hashlib.sha256((MODULE / "go.sum").read_bytes()).hexdigest()[:12]

    def fill(staging: Path) -> None:
        subprocess.run(
            [go, "build", "-o", f"{staging}/", *TOOLS.values()],
            cwd=MODULE,
            check=True,
            timeout=900,
            capture_output=True,
        )

    return cache.filled(cache.root() / f"linters-{key}", fill)


def local_schemas(validate_schemas: Path, version: str) -> Path:
    """kubernetes-validate's strict schemas for version, with refs kubeconform can follow.

    Each has a ``$id`` on kubernetes.io and refers to ``/api/_definitions.json`` from there,
    so a validator would fetch the definitions from the web. Without the ``$id`` and with the
    reference relative, it reads ``_definitions.json`` beside the schema instead.
    """
    source = validate_schemas / f"v{version}-local-strict"

    def fill(staging: Path) -> None:
        for path in source.glob("*.json"):
            schema = json.loads(path.read_text(encoding="utf-8"))
            schema.pop("$id", None)
            text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
            (staging / path.name).write_text(text, encoding="utf-8")

    return cache.filled(cache.root() / "schemas" / f"v{version}-local-strict", fill)


def checkov() -> list[str]:
    """The command that runs checkov, installed from requirements/checkov.lock once per lock.

    A virtualenv of its own (a verified cache): its boto3 pins python-dateutil below the
    runtime lock's, so it cannot share the tests' environment.
    """
    key = hashlib.sha256(CHECKOV_LOCK.read_bytes()).hexdigest()[:12]

    def fill(staging: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(staging)], check=True, timeout=120
        )
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "--python", str(staging / "bin" / "python")),
                *("install", "-q", "--require-hashes", "--no-deps", "-r", str(CHECKOV_LOCK)),
            ],
            check=True,
            timeout=900,
            capture_output=True,
        )

    folder = cache.filled(cache.root() / f"checkov-{key}", fill)
    return [str(folder / "bin" / "python"), "-m", "checkov.main"]


# The Prometheus Operator's module, for its CRDs (example/prometheus-operator-crd): the
# version and the go.sum hash of its zip, checked after the download.
OPERATOR = "github.com/prometheus-operator/prometheus-operator"
OPERATOR_VERSION = "v0.85.0"
OPERATOR_SUM = "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="


def operator_crds() -> Path:
    """The folder of the Prometheus Operator's CRDs, from its Go module (hash checked)."""
    go = shutil.which("go")
    assert go, "the Prometheus Operator's CRDs come from its Go module: the Go toolchain"
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{OPERATOR}@{OPERATOR_VERSION}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    module = json.loads(result.stdout)
    assert module["Sum"] == OPERATOR_SUM, module
    return Path(module["Dir"]) / "example" / "prometheus-operator-crd"


def operator_schemas() -> Path:
    """The strict JSON schemas kubeconform reads for the Operator's kinds, from its CRDs:
    ``GROUP/KIND_VERSION.json`` (kind in lower case), no property but those declared.
    """
    crds = operator_crds()

    def strict(schema: object) -> object:
        if isinstance(schema, list):
            return [strict(item) for item in schema]
        if not isinstance(schema, dict):
            return schema
        out = {key: strict(value) for key, value in schema.items()}
        open_ended = out.get("x-kubernetes-preserve-unknown-fields") is True
        if "properties" in out and "additionalProperties" not in out and not open_ended:
            out["additionalProperties"] = False
        return out

    def fill(staging: Path) -> None:
        import yaml

        class Loader(yaml.SafeLoader):
            """YAML 1.1 reads a bare ``=`` (an enum value in the CRDs) as a 'value' tag."""

        Loader.add_constructor("tag:yaml.org,2002:value", lambda _loader, node: node.value)
        for path in crds.glob("*.yaml"):
            crd = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - safe
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
            (staging / group).mkdir(exist_ok=True)
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                target = staging / group / f"{kind}_{version['name']}.json"
                target.write_text(json.dumps(schema), encoding="utf-8")

    return cache.filled(cache.root() / f"operator-schemas-{OPERATOR_VERSION}", fill)
