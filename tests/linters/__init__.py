"""kube-score and kubeconform, built from their Go modules (go.mod here), and the schemas
kubeconform reads, taken from kubernetes-validate with their ``$ref``s made local.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

MODULE = Path(__file__).resolve().parent
TOOLS = {
    "kube-score": "github.com/zegl/kube-score/cmd/kube-score",
    "kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform",
}


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "podlister"


def build() -> Path:
    """The folder holding both binaries, built once per go.sum."""
    go = shutil.which("go")
    assert go, "the manifest linters are built with the Go toolchain (>= 1.26)"
    key = hashlib.sha256((MODULE / "go.sum").read_bytes()).hexdigest()[:12]
    folder = _cache() / f"linters-{key}"
    if all((folder / name).exists() for name in TOOLS):
        return folder
    subprocess.run(
        [go, "build", "-o", f"{folder}/", *TOOLS.values()],
        cwd=MODULE,
        check=True,
        timeout=900,
        capture_output=True,
    )
    return folder


def local_schemas(validate_schemas: Path, version: str) -> Path:
    """kubernetes-validate's strict schemas for version, with refs kubeconform can follow.

    Each has a ``$id`` on kubernetes.io and refers to ``/api/_definitions.json`` from there,
    so a validator would fetch the definitions from the web. Without the ``$id`` and with the
    reference relative, it reads ``_definitions.json`` beside the schema instead.
    """
    target = _cache() / "schemas" / f"v{version}-local-strict"
    if (target / "_definitions.json").exists():
        return target
    source = validate_schemas / f"v{version}-local-strict"
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in source.glob("*.json"):
        schema = json.loads(path.read_text(encoding="utf-8"))
        schema.pop("$id", None)
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        (staging / path.name).write_text(text, encoding="utf-8")
    staging.rename(target)
    return target
