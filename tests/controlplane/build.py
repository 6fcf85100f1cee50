"""Build Kubernetes' components and etcd from Go modules, cached.

The control plane (etcd, kube-apiserver, kube-controller-manager) and, for the real node of
``tests/node``, kube-scheduler, kubelet, kube-proxy, metrics-server and a static ``pause``
for the pod sandbox image.

``python -m controlplane.build`` (from ``tests/``) builds them and prints where and how long.
``go install`` puts the binaries in one folder and relinks nothing that is up to date, so a
second call costs about a second; Go's module and build caches make a rebuild after a change
cheap too. Nothing here ships in the sidecar image.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from support import verified_cache as cache

GO_MODULE = Path(__file__).resolve().parent
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "metrics-server",
    "pause",
)
BUILD_TIMEOUT = 60 * 60  # seconds; a cold build measured ~5-10 min on 2 cores


class BuildError(RuntimeError):
    """The binaries could not be built; the message says why and what to do."""


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version go.mod requires, e.g. ``v1.37.2``."""
    found = re.search(
        r"^\s*k8s\.io/kubernetes (v\S+)", (GO_MODULE / "go.mod").read_text(), re.MULTILINE
    )
    if found is None:
        msg = f"{GO_MODULE / 'go.mod'} does not require k8s.io/kubernetes"
        raise BuildError(msg)
    return found.group(1)


def bin_dir() -> Path:
    """Where the binaries go: $PODLISTER_CONTROLPLANE_BIN, else the user cache, keyed by
    the version and by go.mod and go.sum (a tool added there is a new folder).
    """
    explicit = os.environ.get("PODLISTER_CONTROLPLANE_BIN")
    if explicit:
        return Path(explicit)
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "metrics-server/go.mod", "metrics-server/go.sum"):
        digest.update((GO_MODULE / name).read_bytes())
    return cache.root() / f"controlplane-{kubernetes_version()}-{digest.hexdigest()[:12]}"


def _ldflags(version: str) -> str:
    # The version is normally stamped by Kubernetes' own build scripts; without it the
    # server reports v0.0.0-master+$Format:%H$, which kubectl cannot parse.
    major, minor = version.lstrip("v").split(".")[:2]
    package = "k8s.io/component-base/version"
    return " ".join(
        (
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        )
    )


def build() -> Path:
    """Build (or find complete) the binaries; return their folder.

    In the user cache the folder is filled whole or not at all and checked before use
    (``verified_cache``); an explicit $PODLISTER_CONTROLPLANE_BIN is the developer's own,
    installed into directly.
    """
    go = shutil.which("go")
    if go is None:
        msg = (
            "the Go toolchain is not on PATH: the real control plane is built from Go modules "
            "(install Go >= 1.26, or run the other tests with -m 'not controlplane')"
        )
        raise BuildError(msg)
    target = bin_dir()
    if os.environ.get("PODLISTER_CONTROLPLANE_BIN"):
        target.mkdir(parents=True, exist_ok=True)
        _install(go, target)
        return target
    return cache.filled(target, lambda staging: _install(go, staging))


def _install(go: str, target: Path) -> None:
    """Install every tool of go.mod into target (go install); BuildError with the reason."""
    version = kubernetes_version()
    flags = ["-buildvcs=false", "-ldflags", _ldflags(version)]
    _go([go, "install", *flags, "tool", "./etcd"], {"GOBIN": str(target)})
    # metrics-server in a module of its own, with the Kubernetes libraries it was released
    # with: built against 1.37's, it panics at start (its OpenAPI models are not found).
    _go(
        [go, "install", "-buildvcs=false", "tool"],
        {"GOBIN": str(target)},
        GO_MODULE / "metrics-server",
    )
    # The pause image is this binary alone, in an image from scratch: static, no libc.
    _go(
        [go, "build", "-buildvcs=false", "-o", str(target / "pause"), "./pause"],
        {"CGO_ENABLED": "0"},
    )
    missing = [name for name in BINARIES if not (target / name).is_file()]
    if missing:
        msg = f"the build left no {', '.join(missing)} in {target}"
        raise BuildError(msg)


def _go(command: list[str], env: dict[str, str], module: Path = GO_MODULE) -> None:
    try:
        result = subprocess.run(
            command,
            cwd=module,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        msg = f"`{' '.join(command)}` did not finish within {BUILD_TIMEOUT} s"
        raise BuildError(msg) from exc
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-20:])
        msg = f"`{' '.join(command)}` in {module} failed ({result.returncode}):\n{tail}"
        raise BuildError(msg)


def main() -> int:
    """Build, print the folder and the time it took; exit 1 with the reason on failure."""
    started = time.monotonic()
    try:
        target = build()
    except BuildError as exc:
        print(f"control plane build failed: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"control plane {kubernetes_version()}: {', '.join(BINARIES)} in {target} ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
