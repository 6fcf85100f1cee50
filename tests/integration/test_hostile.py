"""Hostile neighbours: what another pod, a ConfigMap editor or a broken API answer can throw
at a real sidecar, and the bound that holds each time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from kubestub import endpoint, endpoint_slice
from support.kubelet_volume import write_volume
from support.polling import wait_until
from support.procstat import rss_kib
from support.sidecar_process import PAGE_FILES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

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
