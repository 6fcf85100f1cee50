"""Real sidecar processes pointed at the real control plane, each in the test's folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from support.ports import free_port
from support.sidecar_process import SidecarProcess

if TYPE_CHECKING:
    from pathlib import Path


class PlaneSidecars:
    """Starts sidecars for the base's Service; stop_all() stops every one by pid."""

    def __init__(self, folder: Path) -> None:
        """Output folders and logs go under folder."""
        self.folder = folder
        self.started: list[SidecarProcess] = []

    def start(
        self,
        kubeconfig: Path,
        *,
        namespace: str,
        extra_env: dict[str, str] | None = None,
        output_dir: Path | None = None,
        command_prefix: list[str] | None = None,
    ) -> SidecarProcess:
        """Start one sidecar of the Service "podlister" in namespace."""
        index = len(self.started)
        out = output_dir or self.folder / f"out{index}"
        out.mkdir(exist_ok=True)
        sidecar = SidecarProcess(
            kubeconfig=kubeconfig,
            output_dir=out,
            log_path=self.folder / f"sidecar{index}.log",
            service="podlister",
            namespace=namespace,
            health_addr=f"127.0.0.1:{free_port()}",
            extra_env=extra_env,
            command_prefix=command_prefix,
        )
        self.started.append(sidecar.start())
        return sidecar

    def stop_all(self) -> None:
        """SIGTERM (then SIGKILL) every sidecar started."""
        for sidecar in self.started:
            sidecar.stop()
