"""The manifest linters: kube-score and kubeconform, built from their Go modules (go.mod
here); the schemas kubeconform reads, taken from kubernetes-validate with their ``$ref``s
made local; and checkov, from its own hash lock in a virtualenv of its own.
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
