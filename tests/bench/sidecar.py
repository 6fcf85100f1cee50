"""Sidecar benchmark against the API stand-in: ``tox -e bench``.

For 10, 100, 1,000 and 10,000 endpoints (100 per slice): process start -> first file, then
isolated changes (one endpoint flips readiness, spaced beyond the write interval) -> the new
index.html on disk (written last of the three files). Then RSS, and CPU over an idle period.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import summary
from kubestub import ApiStandIn, endpoint, endpoint_slice
from support.ports import free_port
from support.procstat import cpu_seconds, rss_kib
from support.sidecar_process import SidecarProcess, write_kubeconfig

# A private TemporaryDirectory is made under it, never a fixed name.
SHM = Path("/dev/shm")  # noqa: S108


def slices(total: int, flipped: int | None) -> list[dict[str, object]]:
    out = []
    for s in range((total + 99) // 100):
        count = min(100, total - s * 100)
        eps = [
            endpoint(f"10.{s // 250}.{s % 250}.{i + 1}", ready=not (s == 0 and i == flipped))
            for i in range(count)
        ]
        out.append(endpoint_slice(f"web-{s}", service="web", endpoints=eps))
    return out


def wait_change(path: Path, old_inode: int, timeout: float = 10.0) -> float:
    """Poll (0.2 ms) until the file is replaced; the moment seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.stat().st_ino != old_inode:
                return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.0002)
    raise TimeoutError(path)


def run(total: int, changes: int, idle: float, root: Path) -> None:
    # As a real API server: a bookmark about every minute on an otherwise quiet watch.
    with ApiStandIn(bookmark_interval=60) as api:
        for obj in slices(total, None):
            api.apply(obj)
        out = root / f"out-{total}"
        out.mkdir()
        sidecar = SidecarProcess(
            kubeconfig=write_kubeconfig(root / f"kc-{total}", api.url),
            output_dir=out,
            log_path=root / f"sidecar-{total}.log",
            health_addr=f"127.0.0.1:{free_port()}",
            # The default; the test helper's 5 s would re-watch every 5 s when idle.
            extra_env={"PODLISTER_IDLE_TIMEOUT": "90"},
        )
        started = time.monotonic()
        sidecar.start()
        # index.html is written last of the three: the change is served once it is there.
        index = out / "index.html"
        first = wait_change(index, -1, timeout=30) - started
        latencies = []
        flip = True
        for _ in range(changes):
            time.sleep(0.15)  # isolated: beyond the 100 ms write interval
            inode = index.stat().st_ino
            obj = slices(min(total, 100), 0 if flip else None)[0]
            flip = not flip
            sent = time.monotonic()
            api.apply(obj)
            latencies.append(wait_change(index, inode) - sent)
        rss = rss_kib(sidecar.pid) / 1024
        line = f"{total:>6} endpoints  first file {first * 1000:7.1f} ms"
        line += f"  change->file {summary(latencies)}"
        line += f"  RSS {rss:5.1f} MiB"
        if idle:
            before = cpu_seconds(sidecar.pid)
            time.sleep(idle)
            used = cpu_seconds(sidecar.pid) - before
            line += f"  idle CPU {used * 1000:.2f} ms in {idle:.0f} s"
            line += f" = {used / idle * 1000:.3f} mCPU"
        print(line, flush=True)
        sidecar.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sidecar", description=__doc__)
    parser.add_argument("--changes", type=int, default=40, help="isolated changes per size")
    parser.add_argument(
        "--idle", type=float, default=60.0, help="idle seconds measured at 1,000 (one bookmark)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=SHM if SHM.is_dir() else None,
        help="where output folders go; default /dev/shm, a tmpfs like the Memory emptyDir",
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; times in ms")
    print(f"output under {args.root or tempfile.gettempdir()}")
    with tempfile.TemporaryDirectory(prefix="podlister-bench-", dir=args.root) as tmp:
        for total in (10, 100, 1_000, 10_000):
            run(total, args.changes, args.idle if total == 1_000 else 0.0, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
