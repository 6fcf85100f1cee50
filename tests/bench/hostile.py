"""Figures for the README's hostile-neighbour rows: ``python -m bench.hostile`` (from tests/).

Against a real sidecar on the API stand-in: probe answers and latency while 80 clients drip
request heads a byte at a time, and while 4 clients connect and close as fast as they can;
RSS before, during and after floods of 16 requests with 6 MB of headers each. Then, for each
hostile template, what its child process used (CPU seconds and peak RSS) before it was
stopped, and what the caller saw; SIGTERM to exit during a template's slow first compile;
peak RSS (VmHWM) at growing numbers of endpoints whose names are as long as the API allows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.stats import summary
from kubestub import ApiStandIn, endpoint, endpoint_slice, longest_named_slices
from support.polling import wait_until
from support.ports import free_port
from support.procstat import rss_kib
from support.sidecar_process import SidecarProcess, write_kubeconfig

HOSTILE_TEMPLATES = {
    "spin, nothing emitted": '{% set s = "x"*4000000 %}{% for a in s %}{% for b in s %}'
    "{% endfor %}{% endfor %}",
    "'%0300000000d' % 1": "{{ ('%0300000000d' % 1) | length }}",
    "'{:>300000000}'.format": "{{ '{:>300000000}'.format('x') | length }}",
    "center(300000000)": "{{ 'x' | center(300000000) | length }}",
    "[s] * 60 | join": "{% set s = 'x' * 4000000 %}{{ ([s] * 60) | join | length }}",
    "~ doubling": "{% set s = 'x' * 4000000 %}{% set t = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}"
    "{{ t ~ t }}",
    "list | sort": "{% set s = 'x' * 4000000 %}{{ (s ~ s) | list | sort | length }}",
}

# Run in a fresh interpreter per template, so RUSAGE_CHILDREN is that template's child alone.
_MEASURE = """
import json, resource, sys, time
from sidecar.configmap.worker import IsolatedTemplate
from sidecar.page.render import TemplateError
started = time.monotonic()
try:
    IsolatedTemplate(sys.argv[1], "/etc/podlister/page/index.html.j2").compile().close()
    outcome = "accepted"
except TemplateError as exc:
    outcome = exc.reason
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"outcome": outcome, "cpu": usage.ru_utime + usage.ru_stime,
                  "peak_mib": usage.ru_maxrss / 1024, "wall": time.monotonic() - started}))
"""


def probe(url: str, timeout: float = 2) -> tuple[int, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            code = int(response.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
    except OSError:
        code = 0
    return code, time.monotonic() - started


def drip_attack(sidecar: SidecarProcess, clients: int, seconds: float) -> None:
    host, port = sidecar.health_addr.rsplit(":", 1)
    stop = threading.Event()

    def drip() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 2) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
                while not stop.wait(0.5):
                    s.sendall(b"X")

    threads = [threading.Thread(target=drip, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    answers, latencies = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code, took = probe(sidecar.health_url("/healthz"))
        answers.append(code)
        latencies.append(took)
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    ok = answers.count(200)
    print(f"drip attack, {clients} clients, {seconds:.0f} s: {ok} of {len(answers)} probes 200")
    print(f"  probe latency: {summary(latencies)}")


def churn(sidecar: SidecarProcess, seconds: float) -> None:
    host, port = sidecar.health_addr.rsplit(":", 1)
    stop, opened = threading.Event(), [0]

    def connect_and_close() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                socket.create_connection((host, int(port)), timeout=1).close()
                opened[0] += 1

    threads = [threading.Thread(target=connect_and_close, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    answers, latencies = [], []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        code, took = probe(sidecar.health_url("/healthz"), timeout=1)
        answers.append(code)
        latencies.append(took)
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    rate = opened[0] / (time.monotonic() - started)
    ok = answers.count(200)
    print(f"churn, {rate:,.0f} connect+close a second: {ok} of {len(answers)} probes 200 (1 s)")
    print(f"  probe latency: {summary(latencies)}")


def header_flood(sidecar: SidecarProcess, rounds: int) -> None:
    host, port = sidecar.health_addr.rsplit(":", 1)
    head = b"GET /metrics HTTP/1.1\r\n" + b"".join(
        b"X-Big-%d: " % i + b"a" * 65_000 + b"\r\n" for i in range(99)
    )
    before, peak = rss_kib(sidecar.pid), 0
    codes: list[bytes] = []

    def flood() -> None:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(head + b"\r\n")
            with contextlib.suppress(OSError):
                codes.append(sock.recv(64)[9:12])

    for _ in range(rounds):
        threads = [threading.Thread(target=flood) for _ in range(16)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_kib(sidecar.pid))
            time.sleep(0.005)
    after = rss_kib(sidecar.pid)
    print(
        f"header flood, {rounds} x 16 requests of 6.4 MB: RSS {before / 1024:.1f} -> peak "
        f"{peak / 1024:.1f} -> {after / 1024:.1f} MiB; answers {sorted(set(codes))}"
    )


def templates() -> None:
    for name, source in HOSTILE_TEMPLATES.items():
        result = subprocess.run(
            [sys.executable, "-c", _MEASURE, source],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        figures = json.loads(result.stdout)
        print(
            f"template {name:<24} child CPU {figures['cpu']:5.2f} s, peak RSS "
            f"{figures['peak_mib']:5.1f} MiB, {figures['wall']:5.2f} s wall: {figures['outcome']}"
        )


SPIN = '{% set s = "x"*4000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}'


def stop_during_compile(root: Path, api: ApiStandIn, runs: int) -> None:
    templates = root / "templates"
    templates.mkdir()
    (templates / "index.html.j2").write_text(SPIN, encoding="utf-8")
    took, codes = [], []
    for run in range(runs):
        sidecar = _sidecar(root / f"stop-{run}", api, PODLISTER_TEMPLATE_DIR=str(templates))
        try:
            wait_until(lambda: _children(sidecar.pid), timeout=30, what="the child")  # noqa: B023
            sent = time.monotonic()
            sidecar.signal(signal.SIGTERM)
            codes.append(sidecar.wait_exit(timeout=10))
            took.append(time.monotonic() - sent)
        finally:
            sidecar.stop()
    print(f"SIGTERM during a slow first compile, {runs} runs: exit codes {sorted(set(codes))}")
    print(f"  signal to exit: {summary(took)}")


def largest_input(root: Path, sizes: list[int]) -> None:
    for size in sizes:
        with ApiStandIn() as api:
            for obj in longest_named_slices(size // 100):
                api.apply(obj)
            sidecar = _sidecar(root / f"size-{size}", api)
            try:
                wait_until(
                    lambda: len(sidecar.addresses() or []) == size,  # noqa: B023
                    timeout=600,
                    what=f"{size} addresses",
                )
                peak = rss_kib(sidecar.pid, "VmHWM") / 1024
                page = json.loads((sidecar.output_dir / "index.json").read_text())
            finally:
                sidecar.stop()
        print(
            f"{size:>6} endpoints, names of 253: peak RSS {peak:6.1f} MiB, "
            f"compact page {page['compact']}"
        )


def _sidecar(root: Path, api: ApiStandIn, **env: str) -> SidecarProcess:
    out = root / "out"
    out.mkdir(parents=True)
    return SidecarProcess(
        kubeconfig=write_kubeconfig(root / "kubeconfig", api.url),
        output_dir=out,
        log_path=root / "sidecar.log",
        health_addr=f"127.0.0.1:{free_port()}",
        extra_env=env,
    ).start()


def _children(pid: int) -> list[str]:
    """The child processes of pid, whichever of its threads started them."""
    return [
        c for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()
    ]


def main() -> int:
    """Run each measurement once and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stops", type=int, default=20, help="runs of the stop measurement")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 20_000, 40_000, 80_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podlister-hostile-") as tmp, ApiStandIn() as api:
        root = Path(tmp)
        api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
        out = root / "out"
        out.mkdir()
        sidecar = SidecarProcess(
            kubeconfig=write_kubeconfig(root / "kubeconfig", api.url),
            output_dir=out,
            log_path=root / "sidecar.log",
            health_addr=f"127.0.0.1:{free_port()}",
        ).start()
        try:
            sidecar.wait_page(["10.0.0.1"], timeout=30)
            drip_attack(sidecar, clients=80, seconds=args.seconds)
            churn(sidecar, seconds=args.seconds)
            header_flood(sidecar, rounds=3)
        finally:
            sidecar.stop()
        stop_during_compile(root, api, args.stops)
        templates()
        largest_input(root, args.sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
