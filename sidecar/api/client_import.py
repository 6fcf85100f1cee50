"""In a pod, only the official client's parts the sidecar uses are imported, not the package.

``import kubernetes`` runs the package's ``__init__``: every API class and model, the dynamic
client, the informer, kube_config with requests, oauthlib, yaml and pydantic. A pod needs the
Configuration, the in-cluster loader, the REST layer and its exceptions. Importing only those
keeps 17 MiB off the sidecar's peak memory against its 160 Mi limit (31.0 MiB, not 48.3) and
halves the imports' time against the startup probe (103 ms, not 213; docs/benchmarks.md).
The packages on the way are made empty (their ``__init__`` not run) and the modules imported
into them: laid out for 37.x (tests/integration/test_client_import.py pins the locked one).
For any other version, or any failure, that is undone and the caller logs why; outside a
cluster (a kubeconfig) the whole client is imported as usual.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import ModuleType

LAID_OUT_FOR = "37."
# Packages made empty, parents first; then the modules the sidecar uses, in an order that
# works (incluster_config takes Configuration from kubernetes.client, set there first).
PACKAGES = ("kubernetes", "kubernetes.client", "kubernetes.config", "kubernetes.utils")
MODULES = (
    "kubernetes.client.configuration",
    "kubernetes.client.exceptions",
    "kubernetes.client.rest",
    "kubernetes.config.config_exception",
    "kubernetes.config.incluster_config",
)
_VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


class LayoutError(ImportError):
    """The installed client is not laid out as this module expects."""


def import_client_lightly(environ: Mapping[str, str]) -> str | None:
    """In a pod, import the client's parts the sidecar uses; None, or why the whole was."""
    if not environ.get("KUBERNETES_SERVICE_HOST") or "kubernetes" in sys.modules:
        return None
    before = set(sys.modules)
    try:
        _import_parts()
    except Exception as exc:  # noqa: BLE001 - any failure here means: use the plain import
        for name in set(sys.modules) - before:
            if name == "kubernetes" or name.startswith("kubernetes."):
                del sys.modules[name]
        importlib.import_module("kubernetes")
        return f"{type(exc).__name__}: {exc}"
    return None


def _import_parts() -> None:
    version = declared_version(_empty_package(PACKAGES[0]))
    if not version.startswith(LAID_OUT_FOR):
        msg = f"kubernetes {version} installed; the light import is laid out for {LAID_OUT_FOR}x"
        raise LayoutError(msg)
    for name in PACKAGES[1:]:
        _empty_package(name)
    for name in MODULES:
        module = importlib.import_module(name)
        if name == "kubernetes.client.configuration":
            sys.modules["kubernetes.client"].Configuration = module.Configuration  # type: ignore[attr-defined]


def _empty_package(name: str) -> ModuleType:
    """The package module for name, registered as imported, its __init__ not run."""
    parent, _, child = name.rpartition(".")
    path = sys.modules[parent].__path__ if parent else None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.submodule_search_locations is None:
        msg = f"{name} is not a package"
        raise LayoutError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def declared_version(package: ModuleType) -> str:
    """The version a package's __init__ declares, read from the file, not run."""
    origin = package.__spec__.origin if package.__spec__ else None
    if origin is None:
        msg = f"{package.__name__} has no __init__ file"
        raise LayoutError(msg)
    with open(origin, encoding="utf-8") as init:  # noqa: PTH123 - one small read at start
        found = _VERSION.search(init.read())
    if found is None:
        msg = f"{package.__name__}/__init__.py declares no __version__"
        raise LayoutError(msg)
    return found.group(1)
