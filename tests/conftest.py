"""Shared fixtures: the API stand-in, a kubeconfig for it, and real sidecar processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from ports import free_port

from kubestub import ApiStandIn
from sidecar_process import SidecarProcess, write_kubeconfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture
def api() -> Iterator[ApiStandIn]:
    """A running API stand-in, stopped after the test."""
    stand_in = ApiStandIn(bookmark_interval=0.5).start()
    yield stand_in
    stand_in.stop()


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
