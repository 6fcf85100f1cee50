"""Hostile neighbours: what another pod, a ConfigMap editor or a broken API answer can throw
at a real sidecar, and the bound that holds each time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kubestub import endpoint, endpoint_slice, longest_named_slices
from support.http import status
from support.kubelet_volume import write_volume
from support.polling import wait_until
from support.procstat import rss_kib
from support.sidecar_process import PAGE_FILES, in_private_tmpfs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from kubestub import ApiStandIn
    from support.sidecar_process import SidecarProcess

    Start = Callable[..., SidecarProcess]


def host_port(sidecar: SidecarProcess) -> tuple[str, int]:
    host, port = sidecar.health_addr.rsplit(":", 1)
    return host, int(port)


@contextlib.contextmanager
def dripping(address: tuple[str, int], clients: int, every: float) -> Iterator[None]:
    """Open `clients` connections that each send one more byte of a never-ending request head every
    `every` seconds, reconnecting when dropped, until the block ends.
    """
    stop = threading.Event()

    def drip() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=2) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
                while not stop.wait(every):
                    s.sendall(b"X")
                    # A dropped connection shows as EOF or a reset on the next send.

    threads = [threading.Thread(target=drip, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def test_probes_are_answered_while_other_pods_hold_connections(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """80 connections trickling a request head a byte at a time (more than every slot) do not
    starve the kubelet: 30 probes over 3 s are all answered 200 (before: 24 of 24 refused
    with 16 such clients).
    """
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    with dripping(host_port(sidecar), clients=80, every=0.5):
        answers = []
        for _ in range(30):
            answers.append(sidecar.probe("/healthz"))
            time.sleep(0.1)  # a probe every 100 ms, the kubelet's pace x 100
    assert answers == [200] * 30


def test_header_floods_do_not_grow_memory(api: ApiStandIn, start_sidecar: Start) -> None:
    """16 requests at once, each with 99 headers of 65 KB, three rounds: every one refused
    with 431, and the process's RSS grows by less than 8 MiB (before: 55 -> 405 MiB).
    """
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    address = host_port(sidecar)
    before = rss_kib(sidecar.pid)
    head = b"GET /metrics HTTP/1.1\r\n" + b"".join(
        b"X-Big-%d: " % i + b"a" * 65_000 + b"\r\n" for i in range(99)
    )
    replies: list[bytes] = []

    def flood() -> None:
        with socket.create_connection(address, timeout=10) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(head + b"\r\n")
            reply = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    reply += chunk
            replies.append(reply[:40])

    for _ in range(3):
        threads = [threading.Thread(target=flood) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    grown_mib = (rss_kib(sidecar.pid) - before) / 1024
    assert len(replies) == 48
    assert all(r.startswith(b"HTTP/1.1 431 ") for r in replies), set(replies)
    assert grown_mib < 8, f"RSS grew by {grown_mib:.1f} MiB"
    wait_until(lambda: sidecar.probe("/healthz") == 200, timeout=5, what="probes answered")


def test_emptied_folder_gets_every_file_back(api: ApiStandIn, start_sidecar: Start) -> None:
    """Someone empties the output folder: with the next change the pages and the page's
    style and script are all back (before: page.css and page.js never came back).
    """
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    for entry in sidecar.output_dir.iterdir():
        entry.unlink()
    api.apply(
        endpoint_slice(
            "web-a", service="web", endpoints=[endpoint("10.0.0.1"), endpoint("10.0.0.2")]
        )
    )
    sidecar.wait_page(["10.0.0.1", "10.0.0.2"])
    wait_until(
        lambda: sorted(p.name for p in sidecar.output_dir.iterdir()) == PAGE_FILES,
        timeout=5,
        what="the pages and assets",
    )


@pytest.mark.timeout(120)
def test_a_template_that_spins_on_real_data_is_rejected_and_the_page_goes_on(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """A ConfigMap update whose template passes the load check (sample data) but spins on
    the real Service: its render is stopped at the CPU bound in the child, it is rejected
    (logged with its file, counted), the last good template renders every change, and the
    sidecar stays live and ready (before: the publisher hung, new pods never listed).
    """
    templates = tmp_path / "templates"
    templates.mkdir()
    write_volume(templates, "v1", {"index.html.j2": "v1:{{ addresses | join(',') }}"})
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar(extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)})
    sidecar.wait_file("index.html", lambda text: text == "v1:10.0.0.1")
    spin = '{% set s = "x"*4000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}'
    write_volume(
        templates, "v2", {"index.html.j2": f'{{% if service != "sample" %}}{spin}{{% endif %}}v2'}
    )
    wait_until(lambda: sidecar.events("template_rejected"), timeout=60, what="rejected")
    (rejected,) = sidecar.events("template_rejected")
    assert rejected["file"] == str(templates / "index.html.j2")
    assert "CPU" in rejected["reason"]
    assert rejected["keeping"] == str(templates / "index.html.j2")  # v1, from the same path
    addresses = [f"10.0.0.{i}" for i in range(1, 6)]
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint(a) for a in addresses]))
    sidecar.wait_page(addresses)
    sidecar.wait_file("index.html", lambda text: text == "v1:" + ",".join(addresses))
    assert sidecar.probe("/healthz") == 200
    assert sidecar.probe("/readyz") == 200
    sidecar.wait_metric("podlister_errors_total", 1, kind="template")


def test_names_past_the_api_limits_still_make_a_page(api: ApiStandIn, start_sidecar: Start) -> None:
    """One endpoint with a 1 MB pod name: the name is cut at 253 characters (logged) and the
    page is written; pods added later appear (before: no file was written again).
    """
    api.apply(
        endpoint_slice(
            "web-a", service="web", endpoints=[endpoint("10.0.0.1", pod="p" * 1_000_000)]
        )
    )
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    assert sidecar.events("malformed_endpoints")
    api.apply(endpoint_slice("web-b", service="web", endpoints=[endpoint("10.0.0.2")]))
    sidecar.wait_page(["10.0.0.1", "10.0.0.2"])


@pytest.mark.timeout(120)
def test_a_membership_too_large_for_the_page_is_written_compact(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """7,000 members with 253-character pod and node names and 63-character zones (what the
    API allows) make a page past the render bound: the compact page (every address) is
    written instead, and the next change is written too (before: nothing was written again).
    """
    long_name = "n" * 253
    for s in range(70):
        api.apply(
            endpoint_slice(
                f"web-{s}",
                service="web",
                endpoints=[
                    endpoint(
                        f"10.1.{s}.{i}",
                        pod=f"{i:03d}" + long_name[3:],
                        node=long_name,
                        zone="z" * 63,
                    )
                    for i in range(1, 101)
                ],
            )
        )
    sidecar = start_sidecar()
    wait_until(lambda: len(sidecar.addresses() or []) == 7000, timeout=60, what="7,000 addresses")
    assert sidecar.events("render_compact")
    # The packaged page is the fallback itself: too much data is no template to reject.
    assert not sidecar.events("template_rejected")
    document = json.loads((sidecar.output_dir / "index.json").read_text())
    assert document["compact"] is True
    api.delete("endpointslices", "web-7")
    wait_until(lambda: len(sidecar.addresses() or []) == 6900, timeout=30, what="6,900 addresses")
    assert sidecar.probe("/readyz") == 200


# ---- the second round -----------------------------------------------------------------


def test_a_probe_queued_behind_idle_connections_is_answered(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """The sidecar paused (as a descheduled process is), a complete GET /healthz in the
    backlog, then 100 idle connections behind it: once it runs again the probe is answered,
    not pushed out by the idle ones (before: ConnectionResetError).
    """
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    address = host_port(sidecar)
    sidecar.signal(signal.SIGSTOP)
    idle: list[socket.socket] = []
    try:
        probe = socket.create_connection(address, timeout=10)
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
        idle.extend(socket.create_connection(address, timeout=10) for _ in range(100))
    finally:
        sidecar.signal(signal.SIGCONT)
    with probe:
        assert probe.recv(64).startswith(b"HTTP/1.1 200 OK")
    for sock in idle:
        sock.close()


# Four threads connecting and closing as fast as they can for a given time, in a process of
# their own (as a neighbour in the cluster is; in the test's process they would starve its
# probe of the GIL, which the kubelet never shares); prints "started", then the count.
CHURN = """
import socket, sys, threading, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + seconds
opened = []
def churn():
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=1).close()
            opened.append(1)
        except OSError:
            pass
threads = [threading.Thread(target=churn) for _ in range(4)]
for thread in threads:
    thread.start()
print("started", flush=True)
for thread in threads:
    thread.join()
print(len(opened), flush=True)
"""


def test_probes_are_answered_under_connection_churn(api: ApiStandIn, start_sidecar: Start) -> None:
    """Clients connecting and closing as fast as they can (2,400 a second before), from a
    process of their own, while a probe with the kubelet's 1 s timeout asks every 50 ms for
    3 s: every probe is answered (before: 6 of 58 failed).
    """
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    host, port = host_port(sidecar)
    churn = subprocess.Popen(
        [sys.executable, "-c", CHURN, host, str(port), "3.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    answers = []
    probe_period = threading.Event()  # never set: waits pace the probes
    try:
        assert churn.stdout is not None
        assert churn.stdout.readline() == "started\n"
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            answers.append(status(f"http://{host}:{port}/healthz", timeout=1))
            probe_period.wait(0.05)
        opened = int(churn.communicate(timeout=10)[0])
    finally:
        if churn.poll() is None:
            churn.kill()
            churn.wait(timeout=10)
    assert opened > 1000, opened
    assert answers.count(200) == len(answers), answers


@pytest.mark.timeout(120)
def test_a_template_page_the_folder_cannot_hold_twice_keeps_the_pod_ready(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """A ConfigMap template whose page is 12 MB ("€" four million times, fewer characters
    than the render's bound) in the pod's 16 MiB folder: refused for its size in bytes when
    it is loaded, the packaged page is written instead, the pod stays ready, and after each
    change the three files list the same addresses (before: ENOSPC from the second change
    on, not ready for good, index.html a change behind the others).
    """
    templates = tmp_path / "templates"
    templates.mkdir()
    write_volume(templates, "v1", {"index.html.j2": '{{ "€" * 4000000 }}{{ addresses }}'})
    out = tmp_path / "out"
    out.mkdir()
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar(
        output_dir=out,
        command_prefix=in_private_tmpfs(out, size="16m"),
        extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)},
    )
    # The tmpfs is mounted in the sidecar's own mount namespace: read it from there.
    sidecar.output_dir = Path(f"/proc/{sidecar.pid}/root") / str(out).lstrip("/")
    for count in (1, 2, 3, 4):
        addresses = [f"10.0.0.{i}" for i in range(1, count + 1)]
        api.apply(
            endpoint_slice("web-a", service="web", endpoints=[endpoint(a) for a in addresses])
        )
        sidecar.wait_page(addresses)  # index.json, index.txt and index.html alike
        assert sidecar.probe("/readyz") == 200
    # Refused when it is loaded: its sample page is already too large.
    (refused,) = sidecar.events("template_invalid")
    assert "more than the folder takes" in refused["reason"]


def test_a_lone_surrogate_in_a_pod_name_is_written_as_a_replacement(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """A pod name with a lone surrogate (a JSON escape that a non-conforming
    server or proxy can send) is written as U+FFFD, with the packaged page and with a
    ConfigMap template; the sidecar stays up (before: a crash loop).
    """
    api.apply(
        endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1", pod="bad\ud800x")])
    )
    sidecar = start_sidecar()
    sidecar.wait_file("index.html", lambda html: "bad\ufffdx" in html)
    templates = tmp_path / "templates"
    templates.mkdir()
    write_volume(
        templates, "v1", {"index.html.j2": "{% for m in members %}{{ m.pod }}{% endfor %}"}
    )
    templated = start_sidecar(extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)})
    templated.wait_file("index.html", lambda html: html == "bad\ufffdx")
    for running in (sidecar, templated):
        assert running.process is not None
        assert running.process.poll() is None


def test_a_template_that_writes_no_text_is_rejected_with_the_reason(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """A template whose output holds a lone surrogate (no text a file can hold) is rejected
    with that reason, not with "ended without an answer", and the packaged page goes on.
    """
    templates = tmp_path / "templates"
    templates.mkdir()
    source = '{% if service != "sample" %}{{ "\\ud800" }}{% endif %}ok'
    write_volume(templates, "v1", {"index.html.j2": source})
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar(extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)})
    wait_until(lambda: sidecar.events("template_rejected"), timeout=30, what="rejected")
    assert "not text" in sidecar.events("template_rejected")[0]["reason"]
    sidecar.wait_file("index.html", lambda html: "ready pod" in html)


def test_a_signal_to_the_process_group_leaves_the_template_child_alone(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """SIGHUP and SIGUSR1 to the sidecar's process group (a terminal, an init that forwards
    signals): the template child is in a session of its own and keeps rendering; a child
    killed from outside is started again, not taken for the template's fault.
    """
    templates = tmp_path / "templates"
    templates.mkdir()
    write_volume(templates, "v1", {"index.html.j2": "t:{{ addresses | join(',') }}"})
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar(extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)}, new_session=True)
    sidecar.wait_file("index.html", lambda html: html == "t:10.0.0.1")
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        os.killpg(sidecar.pid, signum)
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.2")]))
    sidecar.wait_file("index.html", lambda html: html == "t:10.0.0.2")
    (child,) = children(sidecar.pid)
    os.kill(child, signal.SIGKILL)
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.3")]))
    sidecar.wait_file("index.html", lambda html: html == "t:10.0.0.3")
    assert not sidecar.events("template_rejected")
    assert sidecar.events("template_child_restarted")


def children(pid: int) -> list[int]:
    """The live child processes of pid, whichever of its threads started them."""
    tasks = Path(f"/proc/{pid}/task").glob("*/children")
    return [int(child) for task in tasks for child in task.read_text().split()]


@pytest.mark.timeout(60)
def test_stop_takes_under_two_seconds_during_a_slow_first_compile(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """SIGTERM while a ConfigMap template's first compile spins (seconds of CPU in the
    child): the sidecar exits 0 within 2 s (before: 2.78 s).
    """
    templates = tmp_path / "templates"
    templates.mkdir()
    spin = '{% set s = "x"*4000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}'
    write_volume(templates, "v1", {"index.html.j2": spin})
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
    sidecar = start_sidecar(extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)})
    wait_until(lambda: children(sidecar.pid), timeout=30, what="the template child compiling")
    sent = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait_exit(timeout=10) == 0
    assert time.monotonic() - sent < 2.0


@pytest.mark.timeout(300)
def test_memory_stays_within_the_limit_at_the_largest_input(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """20,000 endpoints with pod, node and zone names as long as the API allows: the sidecar's
    peak RSS stays under 160 MiB, the container's limit, and the page is written compact
    (before: 171,864 KiB, the OOM killer's on every replica).
    """
    for obj in longest_named_slices(200):
        api.apply(obj)
    sidecar = start_sidecar()
    wait_until(lambda: len(sidecar.addresses() or []) == 20_000, timeout=240, what="20,000")
    document = json.loads((sidecar.output_dir / "index.json").read_text())
    assert document["compact"] is True
    assert rss_kib(sidecar.pid, "VmHWM") < 160 * 1024
