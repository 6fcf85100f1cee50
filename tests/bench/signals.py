"""Double-SIGTERM stress: ``python -m bench.signals`` (from ``tests/``), not part of the suite.

A rollout waits the whole grace period for a pod whose sidecar hangs on SIGTERM, and such a
hang was rare (one in ~40 double signals under load). This runs many sidecars, each sent
two SIGTERMs back to back once its page is written, with CPU hogs beside them, and counts
the ones that did not exit 0 within the bound. A hung process is caught in the act: its
threads' stacks are printed by ``py-spy dump`` (when installed) before it is killed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import summary
from kubestub import ApiStandIn, endpoint, endpoint_slice
from support.ports import free_port
from support.sidecar_process import SidecarProcess, write_kubeconfig

EXIT_BOUND = 5.0  # seconds; the contract is 2 s, more is a hang worth a stack dump
SLOW = 1.0  # seconds; a normal exit takes ~0.1 s: slower ones get their stacks printed too


def one_run(number: int, root: Path, kubeconfig: Path) -> tuple[str, float]:
    """Start a sidecar, wait for its page, SIGTERM it twice; ("ok"|reason, seconds to exit)."""
    out = root / f"out-{number}"
    out.mkdir()
    sidecar = SidecarProcess(
        kubeconfig=kubeconfig,
        output_dir=out,
        log_path=root / f"sidecar-{number}.log",
        health_addr=f"127.0.0.1:{free_port()}",
    ).start()
    try:
        sidecar.wait_page(["10.0.0.1"], timeout=30)
        sent = time.monotonic()
        sidecar.signal(signal.SIGTERM)
        sidecar.signal(signal.SIGTERM)
        try:
            code = sidecar.wait_exit(timeout=SLOW)
        except subprocess.TimeoutExpired:
            # Slow already: show where it is while it still is there.
            dump(sidecar.pid, f"not gone {SLOW} s after the signals")
            try:
                code = sidecar.wait_exit(timeout=EXIT_BOUND - SLOW)
            except subprocess.TimeoutExpired:
                dump(sidecar.pid, "hung")
                return "hung", EXIT_BOUND
        took = time.monotonic() - sent
        return ("ok" if code == 0 else f"exit {code}"), took
    finally:
        sidecar.stop()
        shutil.rmtree(out, ignore_errors=True)


def dump(pid: int, why: str) -> None:
    """Print every thread's stack of the process, and why."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print(f"pid {pid} {why}; install py-spy to see where", flush=True)
        return
    result = subprocess.run(
        [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30, check=False
    )
    print(f"pid {pid} {why}:\n{result.stdout}{result.stderr}", flush=True)


def main() -> int:
    """Run the stress; exit 1 when any sidecar hung or exited non-zero."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(args.hogs)]
    outcomes: dict[str, int] = {}
    exits: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="podlister-signals-") as tmp, ApiStandIn() as api:
            root = Path(tmp)
            api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
            kubeconfig = write_kubeconfig(root / "kubeconfig", api.url)
            with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
                runs = [pool.submit(one_run, n, root, kubeconfig) for n in range(args.runs)]
                for future in concurrent.futures.as_completed(runs):
                    outcome, took = future.result()
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    exits.append(took)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=5)
    print(f"double SIGTERM, {args.runs} runs, {args.hogs} hogs: {outcomes}")
    print(f"signal -> exit: {summary(exits)}")
    return 0 if outcomes.get("ok", 0) == args.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
