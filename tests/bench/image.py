"""The image: its size per layer, and start -> first file inside it (``tox -e bench-image``).

The container runs as a pod would (UID 10101, read-only root, no capabilities) against the
API stand-in on loopback (host networking), with 10 endpoints; each run is timed from
``podman run`` to index.html on disk, so podman's own start is included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from bench.stats import summary
from image.build import PODMAN, RUN_FLAGS, build_base, build_image
from kubestub import ApiStandIn, endpoint, endpoint_slice
from support.polling import wait_until
from support.ports import free_port
from support.sidecar_process import write_kubeconfig


def layers(image: str) -> list[tuple[str, str]]:
    """(size, instruction) of each layer, newest first."""
    history = subprocess.run(
        [*PODMAN, "image", "history", "--format", "json", image],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [
        (str(layer["size"]), str(layer["CreatedBy"])[:90]) for layer in json.loads(history.stdout)
    ]


def one_start(image: str, folder: Path, kubeconfig: Path) -> float:
    """Seconds from podman run to index.html in the output folder."""
    pages = folder / f"html-{free_port()}"
    pages.mkdir()
    pages.chmod(0o777)
    name = f"podlister-bench-{free_port()}"
    begun = time.monotonic()
    subprocess.run(
        [
            *PODMAN,
            "run",
            "--detach",
            f"--name={name}",
            *RUN_FLAGS,
            "--user=10101:10101",
            "--read-only",
            "--cap-drop=ALL",
            f"--volume={kubeconfig}:/kubeconfig:ro",
            f"--volume={pages}:/out",
            "--env=KUBECONFIG=/kubeconfig",
            "--env=PODLISTER_SERVICE=web",
            "--env=PODLISTER_OUTPUT_DIR=/out",
            f"--env=PODLISTER_HEALTH_ADDR=127.0.0.1:{free_port()}",
            image,
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    try:
        wait_until((pages / "index.html").exists, timeout=60, interval=0.002)
        return time.monotonic() - begun
    finally:
        subprocess.run(
            [*PODMAN, "rm", "--force", name], capture_output=True, timeout=60, check=False
        )


def main() -> None:
    """Print the layers and the start -> first file figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    image = build_image(base=build_base())
    print(f"image {image}, layers (newest first):")
    for size, created_by in layers(image):
        print(f"  {size:>12} B  {created_by}")
    with ApiStandIn() as api, tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        folder.chmod(0o755)
        api.apply(
            endpoint_slice(
                "web-a", service="web", endpoints=[endpoint(f"10.0.0.{i}") for i in range(1, 11)]
            )
        )
        kubeconfig = write_kubeconfig(folder / "kubeconfig", api.url)
        kubeconfig.chmod(0o644)
        samples = [one_start(image, folder, kubeconfig) for _ in range(args.runs)]
    print(f"podman run -> index.html, 10 endpoints: {summary(samples)}")


if __name__ == "__main__":
    main()
