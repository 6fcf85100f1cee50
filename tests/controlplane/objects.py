"""Objects the tests and the benchmark create on the real control plane."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from controlplane.rest import ApiError

if TYPE_CHECKING:
    from controlplane.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[2]
APP_LABEL = {"app.kubernetes.io/name": "podlister"}


def kustomize(folder: str) -> list[dict[str, Any]]:
    """The objects a kustomization of this repository renders (kubectl's kustomize)."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO / folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def ensure_namespace(plane: ControlPlane, name: str, labels: dict[str, str] | None = None) -> None:
    """Create the namespace unless it is there already."""
    try:
        plane.rest.post(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
        )
    except ApiError as exc:
        if exc.status != 409:  # already there
            raise


def collection_path(obj: dict[str, Any], namespace: str) -> str:
    """Where to POST a namespaced object of the kinds the base holds."""
    group, _, version = obj["apiVersion"].rpartition("/")
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    plural = {"Role": "roles", "RoleBinding": "rolebindings"}.get(obj["kind"])
    return f"{prefix}/namespaces/{namespace}/{plural or obj['kind'].lower() + 's'}"


def install_base_service(plane: ControlPlane, namespace: str) -> None:
    """The base's ServiceAccount, Role, RoleBinding and Service, moved to namespace."""
    ensure_namespace(plane, namespace)
    for obj in kustomize("k8s"):
        if obj["kind"] in {"ServiceAccount", "Role", "RoleBinding", "Service"}:
            obj["metadata"]["namespace"] = namespace
            for subject in obj.get("subjects", []):
                subject["namespace"] = namespace
            plane.rest.post(collection_path(obj, namespace), obj)


def bare_pod(name: str) -> dict[str, Any]:
    """A pod the Service selects, with the named port its targetPort refers to."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": APP_LABEL},
        "spec": {
            "serviceAccountName": "podlister",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "nginx",
                    "image": "nginxinc/nginx-unprivileged",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ],
        },
    }
