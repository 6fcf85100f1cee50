"""Shared fixtures: the API stand-in, real sidecar processes, and the real control plane."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from controlplane.build import BuildError, build
from controlplane.cluster import ControlPlane
from controlplane.sidecars import PlaneSidecars
from kubestub import ApiStandIn
from localcluster import LocalCluster
from support.ports import free_port
from support.sidecar_process import SidecarProcess, write_kubeconfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def api() -> Iterator[ApiStandIn]:
    """A running API stand-in, stopped after the test."""
    stand_in = ApiStandIn(bookmark_interval=0.5).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A local cluster (stand-in, load balancer, pods) in the test's folder; all stopped after."""
    local = LocalCluster(tmp_path / "cluster").start()
    yield local
    local.stop()


@pytest.fixture
def kubeconfig(api: ApiStandIn, tmp_path: Path) -> Path:
    """A kubeconfig for the stand-in."""
    return write_kubeconfig(tmp_path / "kubeconfig", api.url)


@pytest.fixture
def start_sidecar(kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[..., SidecarProcess]]:
    """Start real sidecar processes; every one is stopped by pid after the test."""
    started: list[SidecarProcess] = []

    def start(*, output_dir: Path | None = None, **kwargs: Any) -> SidecarProcess:
        index = len(started)
        out = output_dir or tmp_path / f"out{index}"
        out.mkdir(exist_ok=True)
        kwargs.setdefault("health_addr", f"127.0.0.1:{free_port()}")
        kwargs.setdefault("kubeconfig", kubeconfig)
        process = SidecarProcess(
            output_dir=out, log_path=tmp_path / f"sidecar{index}.log", **kwargs
        )
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


TEMP_ROOT = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Mark tests by tier; give this run a temporary root of its own (pytest's folders below).

    pytest's default root, /tmp/pytest-of-<user>, is shared by every run of the same user,
    and each run that starts sets it back to 0700: the nginx workers (nobody) of a run in
    progress then lose their way to the pages and answer 403/503. An explicit
    $PYTEST_DEBUG_TEMPROOT or --basetemp is left as given.
    """
    config.pluginmanager.register(TierMarkers(), "podlister-tiers")
    if config.option.basetemp or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    root = Path(tempfile.mkdtemp(prefix="podlister-tests-"))
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(root)
    config.stash[TEMP_ROOT] = root


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this run's temporary root when every test passed; keep it as evidence if not."""
    root = config.stash.get(TEMP_ROOT, None)
    if root is None:
        return
    os.environ.pop("PYTEST_DEBUG_TEMPROOT", None)
    if config.stash.get(FAILED, True):
        print(f"\nthis run's temporary folders (kept): {root}")  # noqa: T201
    else:
        shutil.rmtree(root, ignore_errors=True)


FAILED = pytest.StashKey[bool]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Note whether the run failed, for pytest_unconfigure."""
    session.config.stash[FAILED] = exitstatus != 0


TIERS = ("unit", "integration", "system")


class TierMarkers:
    """Marks each test with its tier, the folder it is in, before ``-m`` selects by marks."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """unit, integration or system: the first folder under tests/."""
        tests = Path(__file__).parent
        for item in items:
            tier = item.path.relative_to(tests).parts[0]
            if tier not in TIERS:
                msg = f"{item.nodeid}: a test file lives in tests/unit, integration or system"
                raise pytest.UsageError(msg)
            item.add_marker(tier)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Build the control plane before any test runs, when a selected test needs it.

    A cold build takes minutes: done here it is outside every test's timeout, and a
    missing toolchain or a refused module stops the run with the reason.
    """
    if not any(item.get_closest_marker("controlplane") for item in items):
        return
    started = time.monotonic()
    try:
        folder = build()
    except BuildError as exc:
        pytest.exit(f"control plane build failed: {exc}", returncode=1)
    print(f"\ncontrol plane binaries in {folder} ({time.monotonic() - started:.0f} s)")  # noqa: T201


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[PlaneSidecars]:
    """Sidecars of the base's Service on the real control plane; stopped by pid after."""
    started = PlaneSidecars(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager on loopback, for the whole session."""
    with ControlPlane(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane
