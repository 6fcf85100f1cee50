"""The official client's parts the sidecar uses, imported without the rest of the package.

``import kubernetes`` (and any ``kubernetes.x``) runs the package's ``__init__``: it imports
every API class and model, the dynamic client, websockets, the informer, and kube_config
with requests, oauthlib, yaml and google-auth; that was over half of the sidecar's start
and most of its memory before any data, for a process that makes two kinds of GET request.
Here the packages on the way (PACKAGES) are made as empty package modules, their
``__init__`` not run, and only the modules the sidecar uses are imported into them: the
Configuration and the in-cluster loader, the REST layer and its exceptions (sidecar/kube.py
makes the GET itself; the generated API classes and ApiClient bring pydantic). The names
other client modules take from those packages are set on them (EXPORTS), or imported on
first use (ON_DEMAND: kube_config, which serves only a kubeconfig, never a pod), or on first
call (ON_CALL: the ApiClient kube_config binds when imported and calls only to refresh an
OIDC token; STAND_INS: requests_oauthlib's OAuth2Session, for the same refresh). The client
still reads the credentials and makes the requests.

This depends on the client's layout, checked for one version (LAID_OUT_FOR, the locked one;
tests/test_kube_import.py pins it). For any other version, or when any step fails, what was
made here is undone and the plain ``import kubernetes`` is used instead; the caller logs the
reason.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import ModuleType

LAID_OUT_FOR = "37.0.2"
# Packages made empty, parents first: their __init__ imports what we do not use.
PACKAGES = (
    "kubernetes",
    "kubernetes.client",
    "kubernetes.client.models",  # api_client (for kube_config) imports the package only
    "kubernetes.config",
    "kubernetes.utils",  # rest.py needs retry and keepalive; __init__ would import yaml
)
# package -> its attribute -> (module, name): set now, in this order (incluster_config
# imports Configuration from kubernetes.client).
EXPORTS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "kubernetes.client": {
        "Configuration": ("kubernetes.client.configuration", "Configuration"),
    },
    "kubernetes.config": {
        "ConfigException": ("kubernetes.config.config_exception", "ConfigException"),
    },
}
# The same, imported on first use: kube_config (requests, oauthlib, yaml) serves only a
# kubeconfig, never a pod.
ON_DEMAND: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "kubernetes.config": {
        "load_kube_config": ("kubernetes.config.kube_config", "load_kube_config"),
    },
}
# The same, imported when first called: kube_config imports ApiClient (pydantic, 115 ms and
# 8.9 MiB measured) from kubernetes.client, and calls it only for an OIDC auth-provider's
# token refresh (and in new_client_from_config, which the sidecar does not use).
ON_CALL: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "kubernetes.client": {"ApiClient": ("kubernetes.client.api_client", "ApiClient")},
}
# Third-party modules a module of the client imports names from, for a path a pod never
# takes: while that module is imported they are modules of stand-ins (as ON_CALL), and they
# leave sys.modules once it is: kube_config takes OAuth2Session from requests_oauthlib, which
# imports requests (4.8 MiB measured), and calls it only to refresh an OIDC token.
STAND_INS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "kubernetes.config.kube_config": {"requests_oauthlib": ("OAuth2Session",)},
}
_VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


class LayoutError(ImportError):
    """The installed client is not laid out as this module expects."""


def import_client_lightly() -> str | None:
    """Import the client's parts the sidecar uses; None, or why the plain import was used.

    Does nothing when the client is already imported (it is whole then).
    """
    if "kubernetes" in sys.modules:
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
    root = _empty_package("kubernetes")
    version = _version(root)
    if version != LAID_OUT_FOR:
        msg = f"kubernetes {version} installed; the light import is laid out for {LAID_OUT_FOR}"
        raise LayoutError(msg)
    for name in PACKAGES[1:]:
        _empty_package(name)
    for package, names in EXPORTS.items():
        for attribute, (module, name) in names.items():
            value = getattr(importlib.import_module(module), name)
            setattr(sys.modules[package], attribute, value)
    for package, names in ON_DEMAND.items():
        sys.modules[package].__getattr__ = _on_demand(package, names)  # type: ignore[method-assign]
    for package, names in ON_CALL.items():
        for attribute, (module, name) in names.items():
            setattr(sys.modules[package], attribute, _imported_on_call(module, name))


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


def _version(package: ModuleType) -> str:
    """The version its __init__ declares, read from the file, not run."""
    origin = package.__spec__.origin if package.__spec__ else None
    if origin is None:
        msg = "kubernetes has no __init__ file"
        raise LayoutError(msg)
    with open(origin, encoding="utf-8") as init:  # noqa: PTH123 - one small read at start
        found = _VERSION.search(init.read())
    if found is None:
        msg = "kubernetes/__init__.py declares no __version__"
        raise LayoutError(msg)
    return found.group(1)


def _on_demand(package: str, names: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module __getattr__ that imports names[attribute] on first use (PEP 562)."""

    def attribute_on_first_use(attribute: str) -> Any:  # noqa: ANN401 - any exported name
        if attribute not in names:
            msg = f"module {package!r} has no attribute {attribute!r} (imported in part)"
            raise AttributeError(msg)
        module, name = names[attribute]
        value = getattr(_import_with_stand_ins(module), name)
        setattr(sys.modules[package], attribute, value)
        return value

    return attribute_on_first_use


def _import_with_stand_ins(module: str) -> ModuleType:
    """Import module with STAND_INS[module] in sys.modules for its import statements only.

    A third-party module already imported is used as it is.
    """
    made: dict[str, ModuleType] = {}
    for name, attributes in STAND_INS.get(module, {}).items():
        if name not in sys.modules:
            stand_in = types.ModuleType(name, f"stand-ins while {module} is imported")
            for attribute in attributes:
                setattr(stand_in, attribute, _imported_on_call(name, attribute))
            made[name] = sys.modules[name] = stand_in
    try:
        return importlib.import_module(module)
    finally:
        for name, stand_in in made.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


def _imported_on_call(module: str, name: str) -> Callable[..., Any]:
    """A stand-in for the class module.name that imports it when called, and calls it."""

    def construct(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - the class's own arguments
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return construct
