"""The fault matrix: each row a fault injected into the stand-in or the filesystem, and what the
real sidecar process must do about it (keep the last good page, recover by itself, never loop).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubestub import ApiStandIn, endpoint, endpoint_slice, endpoints_object
from support.kubelet_volume import write_volume
from support.polling import wait_until
from support.ports import free_port
from support.sidecar_process import PAGE_FILES, SidecarProcess, in_private_tmpfs, write_kubeconfig

Start = Callable[..., SidecarProcess]


def slice_of(name: str, *addresses: str, address_type: str = "IPv4") -> dict[str, object]:
    return endpoint_slice(
        name, service="web", endpoints=[endpoint(a) for a in addresses], address_type=address_type
    )


def started_with(
    api: ApiStandIn, start_sidecar: Start, *addresses: str, **kwargs: object
) -> SidecarProcess:
    """Start a sidecar on one slice; return once its page is whole and its watch is open."""
    api.apply(slice_of("web-a", *addresses))
    sidecar = start_sidecar(**kwargs)
    sidecar.wait_page(list(addresses))
    api.wait_watching()
    return sidecar


# ---- API faults -------------------------------------------------------------------------


def test_api_unreachable_at_start(tmp_path: Path, start_sidecar: Start) -> None:
    """API down at start: the sidecar runs not-ready, backs off (growing delays), and catches up."""
    port = free_port()
    sidecar = start_sidecar(
        kubeconfig=write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    )
    wait_until(lambda: len(sidecar.events("api_error")) >= 3, timeout=15, what="three retries")
    assert sidecar.probe("/readyz") == 503
    errors = sidecar.events("api_error")
    assert {e["kind"] for e in errors} == {"connection"}
    assert errors[0]["host"] == f"http://127.0.0.1:{port}"
    delays = [e["retry_in"] for e in errors]
    assert delays == sorted(delays)
    assert delays[0] >= 0.8
    with ApiStandIn(port=port) as api:
        api.apply(slice_of("web-a", "10.0.0.1"))
        sidecar.wait_addresses(["10.0.0.1"], timeout=40)
        wait_until(lambda: sidecar.probe("/readyz") == 200, timeout=5, what="ready")


def test_forbidden_logged_once_and_recovers(api: ApiStandIn, start_sidecar: Start) -> None:
    """403 on list: one log line naming ServiceAccount, verb and resource; not ready; recovers."""
    api.forbid("list")
    api.apply(slice_of("web-a", "10.0.0.1"))
    sidecar = start_sidecar()
    wait_until(lambda: len(api.requests_for("list")) >= 3, timeout=15, what="three refused lists")
    forbidden = sidecar.events("forbidden")
    assert len(forbidden) == 1
    assert forbidden[0]["service_account"] == "system:serviceaccount:default:podlister"
    assert forbidden[0]["verb"] == "list"
    assert forbidden[0]["resource"] == "endpointslices.discovery.k8s.io"
    assert forbidden[0]["namespace"] == "default"
    assert sidecar.probe("/readyz") == 503
    api.allow()
    sidecar.wait_addresses(["10.0.0.1"], timeout=40)
    gaps = [
        b.at - a.at
        for a, b in zip(api.requests_for("list"), api.requests_for("list")[1:], strict=False)
    ]
    assert min(gaps) >= 0.8, "a 403 must not be retried in a tight loop"


def test_forbidden_watch_keeps_last_page(api: ApiStandIn, start_sidecar: Start) -> None:
    """Losing the watch permission mid-run keeps the last page, logs once per streak, recovers."""
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    api.forbid("watch")
    api.end_watches()
    wait_until(lambda: len(api.requests_for("watch")) >= 3, timeout=15, what="refused watches")
    assert [e["verb"] for e in sidecar.events("forbidden")] == ["watch"]
    assert sidecar.addresses() == ["10.0.0.1"]
    api.allow()
    api.apply(slice_of("web-a", "10.0.0.1", "10.0.0.2"))
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"], timeout=40)


def test_expired_mid_watch_relists_and_replaces_state(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """410 in the stream: relist, and a pod removed during the gap disappears."""
    api.apply(slice_of("web-a", "10.0.0.1"))
    api.apply(slice_of("web-b", "10.0.0.2"))
    sidecar = start_sidecar()
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])
    api.wait_watching()
    with api.stalled():
        api.delete("endpointslices", "web-b")  # queued on the stalled stream, never delivered
        api.expire_watches()
    sidecar.wait_addresses(["10.0.0.1"])
    assert len(api.requests_for("list")) == 2
    sidecar.wait_metric("podlister_watch_restarts_total", 1, reason="expired")


def test_stream_left_at_an_error_event_is_not_reused(api: ApiStandIn, start_sidecar: Start) -> None:
    """A watch left at its 410 ERROR event, before its final chunk came, is closed: the relist
    goes out on a new connection and is counted as an expiry, not a connection error (reusing
    it read the late final chunk as a status line: BadStatusLine on the chunk's "0" line).
    """
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    api.hold_final_chunks()
    api.apply(slice_of("web-b", "10.0.0.2"))
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])
    api.expire_watches()
    wait_until(lambda: len(api.requests_for("list")) == 2, timeout=10, what="a relist")
    watch, relist = api.requests_for("watch")[0], api.requests_for("list")[1]
    assert relist.client_port != watch.client_port
    sidecar.wait_metric("podlister_watch_restarts_total", 1, reason="expired")
    assert sidecar.metric("podlister_watch_restarts_total", reason="connection") == 0
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])


def test_watch_from_compacted_version_relists(api: ApiStandIn, start_sidecar: Start) -> None:
    """A resumed watch whose resourceVersion was compacted gets 410 and relists."""
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    with api.stalled():
        api.apply(slice_of("web-a", "10.0.0.3"))
        api.compact()
        api.drop_watches()
        # The resumed watch asks for a compacted version: 410 (sent even while stalled).
        wait_until(lambda: len(api.requests_for("list")) == 2, timeout=15, what="a relist")
    sidecar.wait_addresses(["10.0.0.3"], timeout=15)
    sidecar.wait_metric("podlister_watch_restarts_total", 1, reason="expired")


def test_clean_end_resumes_without_relist(api: ApiStandIn, start_sidecar: Start) -> None:
    """A watch the server ends cleanly is resumed from the last resourceVersion, no list, on
    the same kept-alive connection (the stream was read to its end).
    """
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    api.apply(slice_of("web-a", "10.0.0.2"))
    sidecar.wait_addresses(["10.0.0.2"])
    version = str(api.resource_version)
    api.end_watches()
    wait_until(lambda: len(api.requests_for("watch")) == 2, timeout=5, what="a second watch")
    first, second = api.requests_for("watch")
    assert second.params["resourceVersion"] == version
    assert second.client_port == first.client_port
    assert len(api.requests_for("list")) == 1
    api.apply(slice_of("web-a", "10.0.0.4"))
    sidecar.wait_addresses(["10.0.0.4"])


def test_bookmarks_advance_the_resume_point(api: ApiStandIn, start_sidecar: Start) -> None:
    """Bookmarks move the resourceVersion a resumed watch starts from, without any change."""
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    api.apply(endpoint_slice("other", service="api", endpoints=[endpoint("10.9.9.9")]))
    newest = str(api.resource_version)
    wait_until(
        lambda: sidecar.metric("podlister_watch_events_total", type="BOOKMARK") >= 2, timeout=5
    )
    api.end_watches()
    wait_until(lambda: len(api.requests_for("watch")) == 2, timeout=5, what="a second watch")
    assert api.requests_for("watch")[1].params["resourceVersion"] == newest
    assert api.requests_for("watch")[0].params["allowWatchBookmarks"] == "true"


def test_abrupt_reset_resumes(api: ApiStandIn, start_sidecar: Start) -> None:
    """A connection reset mid-stream is resumed from the last resourceVersion after backoff."""
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    version = str(api.resource_version)
    api.drop_watches()
    wait_until(lambda: len(api.requests_for("watch")) == 2, timeout=10, what="a resumed watch")
    assert api.requests_for("watch")[1].params["resourceVersion"] == version
    assert len(api.requests_for("list")) == 1
    api.apply(slice_of("web-a", "10.0.0.5"))
    sidecar.wait_addresses(["10.0.0.5"])


def resumed_watches(sidecar: SidecarProcess, count: int) -> bool:
    return sidecar.metric("podlister_watch_restarts_total", reason="connection") == count


def test_backoff_starts_over_after_a_healthy_watch(api: ApiStandIn, start_sidecar: Start) -> None:
    """Resets of watches that had delivered data each back off from the first step (0.8 s),
    instead of escalating as a streak of failed connections does (0.8, 1.6, 3.2, 6.4 s).
    """
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    for round_ in range(1, 5):
        address = f"10.0.0.{round_ + 1}"
        api.apply(slice_of("web-a", address))
        sidecar.wait_addresses([address])  # the current watch delivered an event
        api.drop_watches()
        resumed = functools.partial(resumed_watches, sidecar, round_)
        wait_until(resumed, timeout=10, what=f"resumed watch {round_}")
    # Four first steps: at most 4 x 0.8 s x 1.25 (jitter); an escalating streak is >= 9 s.
    assert sidecar.metric("podlister_backoff_seconds_total") <= 4.0


def test_stalled_stream_is_abandoned_and_rewatched_at_once(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """A silent stream is dropped after PODLISTER_IDLE_TIMEOUT and re-watched at once, again
    and again without a growing backoff: the server accepted it, so the API is there (a quiet
    namespace without bookmarks looks the same). The page and both probes stay as they were;
    the restarts are counted; when the stream flows again, changes follow.
    """
    sidecar = started_with(
        api, start_sidecar, "10.0.0.1", extra_env={"PODLISTER_IDLE_TIMEOUT": "1"}
    )
    api.stall()
    stalled_at = time.monotonic()
    wait_until(lambda: len(api.requests_for("watch")) >= 4, timeout=15, what="re-watches")
    watches = [r.at for r in api.requests_for("watch")]
    # each abandoned after ~1 s of silence and re-watched at once: no step of 0.8, 1.6, 3.2 s
    assert watches[3] - stalled_at < 3 * (1 + 0.5)
    sidecar.wait_metric("podlister_backoff_seconds_total", 0)
    assert sidecar.metric("podlister_watch_restarts_total", reason="idle") >= 3
    assert sidecar.addresses() == ["10.0.0.1"]
    assert sidecar.probe("/healthz") == 200
    assert sidecar.probe("/readyz") == 200
    document = json.loads(sidecar.wait_file("index.json", bool))
    assert document["stale_since"] is None
    api.stall(stalled=False)
    api.apply(slice_of("web-a", "10.0.0.6"))
    sidecar.wait_addresses(["10.0.0.6"], timeout=10)


def test_api_gone_mid_run_marks_the_page_stale_and_recovers(
    tmp_path: Path, start_sidecar: Start
) -> None:
    """The API server goes away while the sidecar runs: the page keeps its list and says since
    when it may be stale, podlister_watch_healthy is 0, /healthz and /readyz stay 200 (an
    unreachable API is no reason to restart). When it is back, the mark goes.
    """
    port = free_port()
    kubeconfig = write_kubeconfig(tmp_path / "kc-gone", f"http://127.0.0.1:{port}")
    first = ApiStandIn(port=port, bookmark_interval=0.5).start()
    try:
        sidecar = started_with(first, start_sidecar, "10.0.0.1", kubeconfig=kubeconfig)
    finally:
        first.stop()
    sidecar.wait_file("index.json", lambda text: json.loads(text)["stale_since"] is not None)
    sidecar.wait_file("index.html", lambda html: "may be out of date" in html)
    assert sidecar.addresses() == ["10.0.0.1"]
    assert sidecar.probe("/healthz") == 200
    assert sidecar.probe("/readyz") == 200
    sidecar.wait_metric("podlister_watch_healthy", 0)
    with ApiStandIn(port=port, bookmark_interval=0.5) as second:
        # The new stand-in counts resourceVersions from the start again: replay the first
        # one, so that the change is newer than what the sidecar resumes from.
        second.apply(slice_of("web-a", "10.0.0.1"))
        second.apply(slice_of("web-a", "10.0.0.2"))
        sidecar.wait_addresses(["10.0.0.2"], timeout=40)
        sidecar.wait_file("index.json", lambda text: json.loads(text)["stale_since"] is None)
        sidecar.wait_metric("podlister_watch_healthy", 1)


def test_malformed_and_unknown_events_are_skipped_and_counted(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """An undecodable line and an unknown event type are counted and skipped; the stream goes on,
    and the possibly missed change is repaired by a list at the next reconnect.
    """
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    api.inject_line(b'{"type": "ADDED", "object": {"metadata": {"na')
    api.inject_line(json.dumps({"type": "SURPRISE", "object": {"metadata": {}}}).encode())
    api.apply(slice_of("web-a", "10.0.0.7"))
    sidecar.wait_addresses(["10.0.0.7"])
    sidecar.wait_metric("podlister_skipped_events_total", 1, reason="malformed")
    sidecar.wait_metric("podlister_skipped_events_total", 1, reason="unknown_type")
    assert len(api.requests_for("list")) == 1
    api.end_watches()
    wait_until(lambda: len(api.requests_for("list")) == 2, timeout=10, what="a repairing list")


def test_server_errors_are_retried(api: ApiStandIn, start_sidecar: Start) -> None:
    """500 and 503 are retried with backoff until the list succeeds."""
    api.fail_next(500)
    api.fail_next(503)
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    sidecar.wait_metric("podlister_errors_total", 2, kind="server")
    lists = api.requests_for("list")
    assert len(lists) == 3
    assert lists[1].at - lists[0].at >= 0.8


def test_throttling_honours_retry_after(api: ApiStandIn, start_sidecar: Start) -> None:
    """429 with Retry-After: 3 waits at least 3 s before the next attempt."""
    api.fail_next(429, retry_after=3)
    started_with(api, start_sidecar, "10.0.0.1")
    lists = api.requests_for("list")
    assert len(lists) == 2
    assert lists[1].at - lists[0].at >= 3


def test_slice_api_absent_falls_back_to_endpoints(api: ApiStandIn, start_sidecar: Start) -> None:
    """404 for discovery.k8s.io/v1: v1 Endpoints of the Service by field selector, watched too."""
    api.disable_slices()
    api.apply(endpoints_object("web", ready=["10.0.0.2", "10.0.0.1"], not_ready=["10.0.0.3"]))
    api.apply(endpoints_object("other", ready=["10.0.0.9"]))
    sidecar = start_sidecar()
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])
    assert json.loads((sidecar.output_dir / "index.json").read_text())["source"] == "endpoints"
    assert sidecar.events("endpointslice_api_absent")
    api.apply(endpoints_object("web", ready=["10.0.0.3"]))
    sidecar.wait_addresses(["10.0.0.3"])
    assert api.requests_for("watch")[-1].params["fieldSelector"] == "metadata.name=web"


# ---- what the API says ------------------------------------------------------------------


def test_dual_stack_not_ready_and_terminating(api: ApiStandIn, start_sidecar: Start) -> None:
    """One slice per family is merged (IPv4 first); not-ready and terminating are kept apart."""
    api.apply(slice_of("web-v6", "fd00::2", "fd00::1", address_type="IPv6"))
    api.apply(
        endpoint_slice(
            "web-v4",
            service="web",
            endpoints=[
                endpoint("10.0.0.1"),
                endpoint("10.0.0.2", ready=False),
                endpoint("10.0.0.3", ready=False, serving=True, terminating=True),
            ],
        )
    )
    sidecar = start_sidecar()
    sidecar.wait_addresses(["10.0.0.1", "fd00::1", "fd00::2"])
    document = json.loads((sidecar.output_dir / "index.json").read_text())
    assert [m["address"] for m in document["terminating"]] == ["10.0.0.3"]
    assert [m["address"] for m in document["not_ready"]] == ["10.0.0.2"]
    sidecar.wait_metric("podlister_endpoints", 1, state="terminating")


def test_addresses_are_read_as_kube_proxy_reads_them(api: ApiStandIn, start_sidecar: Start) -> None:
    """What the page lists is where kube-proxy sends traffic: IPv4 text with leading zeros is
    decimal; an IPv4-mapped address in the IPv6 slice is the IPv4 pod it names (one row, not
    two); with every pod terminating (a rollout without surge), the ones that still serve
    are said so in index.json and on the page.
    """
    api.apply(slice_of("web-v4", "010.0.0.1", "10.0.0.2"))
    api.apply(slice_of("web-v6", "::ffff:10.0.0.1", "::ffff:10.0.0.2", address_type="IPv6"))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1", "10.0.0.2"])
    api.apply(
        endpoint_slice(
            "web-v4",
            service="web",
            endpoints=[
                endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
                endpoint("10.0.0.2", ready=False, serving=False, terminating=True),
            ],
        )
    )
    api.delete("endpointslices", "web-v6")
    sidecar.wait_addresses([])
    document = json.loads((sidecar.output_dir / "index.json").read_text())
    assert [(m["address"], m["serving"]) for m in document["terminating"]] == [
        ("10.0.0.1", True),
        ("10.0.0.2", False),
    ]
    sidecar.wait_file("index.html", lambda html: "still serving" in html)


def test_ten_thousand_endpoints(api: ApiStandIn, start_sidecar: Start) -> None:
    """10,000 endpoints in 100 slices are listed, and a change to one slice is applied."""
    for s in range(100):
        api.apply(
            endpoint_slice(
                f"web-{s}",
                service="web",
                endpoints=[endpoint(f"10.1.{s}.{i}") for i in range(1, 101)],
            )
        )
    sidecar = start_sidecar()
    wait_until(
        lambda: len(sidecar.addresses() or []) == 10_000, timeout=30, what="10,000 addresses"
    )
    api.delete("endpointslices", "web-7")
    wait_until(lambda: len(sidecar.addresses() or []) == 9_900, timeout=10, what="9,900 addresses")
    assert "10.1.7.1" not in (sidecar.addresses() or [])


def test_html_injection_is_escaped(api: ApiStandIn, start_sidecar: Start) -> None:
    """A hostname or pod name carrying markup ends up escaped in index.html."""
    api.apply(
        endpoint_slice(
            "web-a",
            service="web",
            endpoints=[
                endpoint("10.0.0.1", pod='"><img src=x onerror=alert(1)>'),
                endpoint("10.0.0.2", hostname="<b>h</b>"),
            ],
        )
    )
    sidecar = start_sidecar()
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])
    html = sidecar.wait_file("index.html", lambda html: "10.0.0.2" in html)
    assert "<img" not in html
    assert "<b>h</b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


# ---- templates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "reason"),
    [
        ("<p>\n{% if addresses %}\n", 2, "endif"),
        ("<p>{{ service }}</p>\n<p>{{ nonexistent }}</p>\n", 2, "nonexistent"),
        ("<p>\n{{ cycler.__init__.__globals__.os.popen('id').read() }}\n", 2, "sandbox"),
    ],
)
def test_broken_template_at_start_serves_the_packaged_page(  # noqa: PLR0917 - fixtures
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path, source: str, line: int, reason: str
) -> None:
    """A syntax error, an undefined variable or a sandbox violation at start: the error is
    logged with file and line and counted, the packaged page is served (a new pod must not
    crash-loop on a bad ConfigMap), and a fixed template is applied live.
    """
    templates = tmp_path / "templates"
    templates.mkdir()
    configmap_dir(templates, "v1", source)
    sidecar = started_with(
        api, start_sidecar, "10.0.0.1", extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)}
    )
    # Logged before the first page is written (which waits for the template's outcome).
    (record,) = sidecar.events("template_invalid")
    assert record["file"] == str(templates / "index.html.j2")
    assert record["line"] == line
    assert reason in record["reason"]
    sidecar.wait_metric("podlister_errors_total", 1, kind="template")
    sidecar.wait_file("index.html", lambda html: "ready pod" in html)
    assert sidecar.probe("/readyz") == 200
    configmap_dir(templates, "v2", "fixed:{{ addresses | join(',') }}")
    sidecar.wait_file("index.html", lambda html: html == "fixed:10.0.0.1")


def configmap_dir(root: Path, version: str, source: str) -> None:
    """Lay out or update a folder the way the kubelet does for a ConfigMap volume."""
    write_volume(root, version, {"index.html.j2": source})


def test_template_updates_through_configmap_symlink_swap(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """A ConfigMap update (..data symlink swap) re-renders the page without a restart; a broken
    update is logged and the last good template and page stay.
    """
    templates = tmp_path / "templates"
    templates.mkdir()
    configmap_dir(templates, "v1", "v1:{{ addresses | join(',') }}")
    sidecar = started_with(
        api, start_sidecar, "10.0.0.1", extra_env={"PODLISTER_TEMPLATE_DIR": str(templates)}
    )
    html = sidecar.output_dir / "index.html"
    sidecar.wait_file("index.html", lambda text: text == "v1:10.0.0.1")
    configmap_dir(templates, "v2", "v2:{{ addresses | length }}")
    wait_until(lambda: html.read_text() == "v2:1", timeout=10, what="v2 page")
    configmap_dir(templates, "v3", "v3:{{ broken ")
    wait_until(
        lambda: sidecar.events("template_invalid"), timeout=10, what="a logged template error"
    )
    api.apply(slice_of("web-a", "10.0.0.1", "10.0.0.2"))
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])
    sidecar.wait_file("index.html", lambda text: text == "v2:2")
    assert sidecar.events("template_invalid")[0]["line"] == 1


# ---- the output folder ------------------------------------------------------------------


def nsenter(sidecar: SidecarProcess, *command: str) -> None:
    flags = ["-m"] if os.geteuid() == 0 else ["-U", "-m", "--preserve-credentials"]
    subprocess.run(["nsenter", "-t", str(sidecar.pid), *flags, *command], check=True, timeout=10)


def fill(fd: int) -> None:
    """Write until the file system refuses."""
    while os.write(fd, b"\0" * 4096):
        pass


def test_full_disk_keeps_the_old_page_and_retries(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """ENOSPC: the old files stay, no temp is left, readiness drops, and the write is retried
    (with backoff) until space returns.
    """
    out = tmp_path / "out-full"
    out.mkdir()
    sidecar = start_sidecar(output_dir=out, command_prefix=in_private_tmpfs(out))
    inside = Path(f"/proc/{sidecar.pid}/root") / str(out).lstrip("/")
    sidecar.output_dir = inside
    api.apply(slice_of("web-a", "10.0.0.1"))
    # All of the page, not only index.json: the folder's listing is read after the disk is full.
    sidecar.wait_page(["10.0.0.1"])
    filler = inside / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left"):
            fill(fd)
    finally:
        os.close(fd)
    api.apply(slice_of("web-a", *[f"10.0.0.{i}" for i in range(1, 200)]))
    wait_until(lambda: sidecar.events("write_failed"), timeout=10, what="a failed write")
    assert sidecar.events("write_failed")[0]["errno"] == 28
    assert sidecar.addresses() == ["10.0.0.1"]
    assert sorted(p.name for p in inside.iterdir()) == ["filler", *PAGE_FILES]
    wait_until(lambda: sidecar.probe("/readyz") == 503, timeout=5, what="not ready")
    filler.unlink()
    wait_until(lambda: len(sidecar.addresses() or []) == 199, timeout=40, what="the retried write")
    wait_until(lambda: sidecar.probe("/readyz") == 200, timeout=5, what="ready again")


def test_read_only_folder_keeps_the_old_page(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """A folder that turns read-only: old files kept, error logged, retried, recovered."""
    out = tmp_path / "out-ro"
    out.mkdir()
    sidecar = start_sidecar(output_dir=out, command_prefix=in_private_tmpfs(out))
    inside = Path(f"/proc/{sidecar.pid}/root") / str(out).lstrip("/")
    sidecar.output_dir = inside
    api.apply(slice_of("web-a", "10.0.0.1"))
    sidecar.wait_page(["10.0.0.1"])  # whole, before the folder turns read-only
    nsenter(sidecar, "mount", "-o", "remount,ro", str(out))
    api.apply(slice_of("web-a", "10.0.0.2"))
    wait_until(lambda: len(sidecar.events("write_failed")) >= 2, timeout=15, what="retried writes")
    failures = sidecar.events("write_failed")
    assert failures[0]["errno"] == 30  # EROFS
    assert failures[1]["retry_in"] >= failures[0]["retry_in"]
    assert sidecar.addresses() == ["10.0.0.1"]
    nsenter(sidecar, "mount", "-o", "remount,rw", str(out))
    sidecar.wait_addresses(["10.0.0.2"], timeout=40)


def test_stale_temps_removed_at_start(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """Temp files a killed predecessor left are removed when the sidecar starts."""
    out = tmp_path / "out-stale"
    out.mkdir()
    (out / ".podlister-index.html.0badc0de.tmp").write_text("half a page")
    started_with(api, start_sidecar, "10.0.0.1", output_dir=out)
    assert sorted(p.name for p in out.iterdir()) == PAGE_FILES


def test_sigterm_during_a_burst(api: ApiStandIn, start_sidecar: Start) -> None:
    """SIGTERM in the middle of a burst of changes: exit 0, only whole files, no temps."""
    sidecar = started_with(api, start_sidecar, "10.0.2.1")
    stop = threading.Event()

    def churn() -> None:
        count = 1
        while not stop.is_set() and count < 5000:
            count += 1
            api.apply(slice_of("web-a", *[f"10.0.2.{i}" for i in range(1, count % 250 + 2)]))

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        wait_until(
            lambda: sidecar.metric("podlister_writes_total") >= 5,
            timeout=10,
            what="writes in the burst",
        )
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait_exit(timeout=5) == 0
    finally:
        stop.set()
        churner.join(timeout=10)
    assert sorted(p.name for p in sidecar.output_dir.iterdir()) == PAGE_FILES
    document = json.loads((sidecar.output_dir / "index.json").read_text())
    text = (sidecar.output_dir / "index.txt").read_text().splitlines()
    assert text == document["addresses"]


# ---- staying up -------------------------------------------------------------------------


def test_rotated_token_is_read_again_on_401(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """When the API starts refusing the old token (401), the sidecar reads its token file
    again at once and recovers after the first backoff step, not after the client's 60 s timer.
    """
    token = tmp_path / "token"
    token.write_text("first")
    api.require_token("first")
    kubeconfig = write_kubeconfig(tmp_path / "kc-token", api.url, token_file=token)
    sidecar = started_with(api, start_sidecar, "10.0.0.1", kubeconfig=kubeconfig)
    token.write_text("second")  # the kubelet rotated the projected token
    api.require_token("second")  # and the old one is no longer accepted
    api.end_watches()
    rotated = time.monotonic()
    wait_until(lambda: len(api.requests_for("watch")) >= 3, timeout=10, what="a watch after 401")
    api.apply(slice_of("web-a", "10.0.0.2"))
    sidecar.wait_addresses(["10.0.0.2"], timeout=10)
    assert time.monotonic() - rotated < 5
    assert sidecar.metric("podlister_errors_total", kind="unauthorized") >= 1


def test_odd_events_never_stop_the_watch(api: ApiStandIn, start_sidecar: Start) -> None:
    """A type that is a list, an ERROR with code "abc", an object with a list as metadata:
    each is skipped or retried with a relist, and the sidecar goes on following changes.
    """
    sidecar = started_with(api, start_sidecar, "10.0.0.1")
    api.inject_line(b'{"type": ["ADDED"], "object": {}}')
    api.inject_line(b'{"type": "MODIFIED", "object": {"metadata": [], "addressType": {}}}')
    api.inject_line(b'{"type": "ERROR", "object": {"code": "abc", "message": "?"}}')
    wait_until(lambda: len(api.requests_for("watch")) >= 2, timeout=10, what="a re-watch")
    api.apply(slice_of("web-a", "10.0.0.3"))
    sidecar.wait_addresses(["10.0.0.3"], timeout=15)
    assert sidecar.metric("podlister_skipped_events_total", reason="malformed") >= 1
    sidecar.wait_metric("podlister_errors_total", 1, kind="watch_error")
    assert not sidecar.events("worker_crashed")


def test_restart_with_the_api_down_serves_the_last_page(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """A sidecar restarted during an API outage finds its earlier page in the folder: it is
    ready at once, keeps the page's history, and marks the page stale while the API is down.
    On a first-ever start (empty folder) the same outage leaves it not ready.
    """
    out = tmp_path / "out-restart"
    out.mkdir()
    first = started_with(api, start_sidecar, "10.0.0.1", output_dir=out)
    api.apply(slice_of("web-a", "10.0.0.1", "10.0.0.2"))
    first.wait_page(["10.0.0.1", "10.0.0.2"])
    assert first.stop() == 0
    dead = write_kubeconfig(tmp_path / "kc-dead", f"http://127.0.0.1:{free_port()}")
    second = start_sidecar(output_dir=out, kubeconfig=dead)
    wait_until(lambda: second.probe("/readyz") == 200, timeout=10, what="ready at once")
    assert not second.events("list")
    document = json.loads(
        second.wait_file("index.json", lambda text: json.loads(text)["stale_since"] is not None)
    )
    assert document["addresses"] == ["10.0.0.1", "10.0.0.2"]
    assert document["changes"][0]["added"] == ["10.0.0.2"]
    assert second.probe("/healthz") == 200
    fresh = start_sidecar(kubeconfig=dead)
    wait_until(lambda: len(fresh.events("api_error")) >= 2, timeout=15, what="retries")
    assert fresh.probe("/readyz") == 503


def second_signal_at_stop(sidecar: SidecarProcess) -> None:
    """SIGTERM again the moment the sidecar logs "stop": the interpreter is shutting down."""
    wait_until(lambda: sidecar.events("stop"), timeout=5, interval=0.001, what="stop")
    with contextlib.suppress(ProcessLookupError):
        sidecar.signal(signal.SIGTERM)


@pytest.mark.parametrize(
    "signals",
    [("SIGTERM",), ("SIGINT",), ("SIGTERM", "SIGTERM"), ("SIGTERM", "SIGTERM at stop")],
)
def test_signals_always_exit_zero_within_two_seconds_under_load(
    api: ApiStandIn, start_sidecar: Start, signals: tuple[str, ...]
) -> None:
    """Ten runs each, with both cores busy: SIGTERM, SIGINT, a second SIGTERM at once, or a
    second SIGTERM while the interpreter shuts down (where CPython restores default actions)
    all end the process with 0 within 2 s, and every log line is one JSON object.
    """
    api.apply(slice_of("web-a", "10.0.0.1"))
    hogs = [
        subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(os.cpu_count() or 2)
    ]
    try:
        for _ in range(10):
            sidecar = start_sidecar()
            sidecar.wait_page(["10.0.0.1"])
            sent = time.monotonic()
            for name in signals:
                if name == "SIGTERM at stop":
                    second_signal_at_stop(sidecar)
                else:
                    sidecar.signal(getattr(signal, name))
            assert sidecar.wait_exit(timeout=10) == 0
            assert time.monotonic() - sent < 2.0
            text = sidecar.log_path.read_text()
            assert all(line.startswith("{") for line in text.splitlines()), text[-500:]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=5)


def test_other_signals_do_not_stop_it(api: ApiStandIn, start_sidecar: Start) -> None:
    """SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGPWR, SIGIO and real-time
    signals (whose default action ends a process that is not a container's PID 1) are logged
    and ignored: the sidecar stays live and ready; SIGTERM still ends it with 0 (before: all
    but the first three ended it with no orderly stop).
    """
    api.apply(slice_of("web-a", "10.0.0.1"))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    others = (signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGPWR, signal.SIGIO)
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, *others, signal.SIGRTMIN + 3):
        sidecar.signal(signum)
        name = "SIGRTMIN+3" if signum == signal.SIGRTMIN + 3 else signal.Signals(signum).name

        def ignored(name: str = name) -> bool:
            return any(
                e["signal"] == name and e["action"] == "ignored" for e in sidecar.events("signal")
            )

        wait_until(ignored, timeout=5, what=f"{name} logged as ignored")
    assert sidecar.process is not None
    assert sidecar.process.poll() is None
    assert sidecar.probe("/healthz") == 200
    assert sidecar.probe("/readyz") == 200
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait_exit(timeout=10) == 0


def test_page_returns_when_the_content_fits_again(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """On a 96 KiB folder, 4,000 endpoints do not fit (ENOSPC, old page kept, not ready); back
    to 12, the page returns within one capped backoff step, although the history holds the
    4,000-address change (it names 10 addresses and counts the rest).
    """
    out = tmp_path / "out-small"
    out.mkdir()
    sidecar = start_sidecar(output_dir=out, command_prefix=in_private_tmpfs(out, size="96k"))
    sidecar.output_dir = Path(f"/proc/{sidecar.pid}/root") / str(out).lstrip("/")
    small = [f"10.0.0.{i}" for i in range(1, 13)]
    api.apply(slice_of("web-a", *small))
    sidecar.wait_page(small)
    many = [f"10.{i // 250}.{i % 250}.1" for i in range(4000)]
    api.apply(slice_of("web-a", *many))
    wait_until(lambda: sidecar.events("write_failed"), timeout=10, what="a failed write")
    assert sidecar.addresses() == small
    wait_until(lambda: sidecar.probe("/readyz") == 503, timeout=5, what="not ready")
    api.apply(slice_of("web-a", *small[:11]))
    sidecar.wait_page(small[:11], timeout=4.0 * 1.25 + 5)
    wait_until(lambda: sidecar.probe("/readyz") == 200, timeout=5, what="ready again")
    delays = [event["retry_in"] for event in sidecar.events("write_failed")]
    assert max(delays) <= 4.0


def test_a_page_too_big_for_the_folder_is_written_compact(
    api: ApiStandIn, start_sidecar: Start, tmp_path: Path
) -> None:
    """2,000 endpoints with long pod and node names do not fit a 320 KiB folder in full: the
    compact page is written instead (every address, no pod/node detail, no history,
    "compact": true), so the pod stays ready with a complete list. Back to a size that fits,
    the full page returns.
    """
    out = tmp_path / "out-tight"
    out.mkdir()
    sidecar = start_sidecar(output_dir=out, command_prefix=in_private_tmpfs(out, size="320k"))
    sidecar.output_dir = Path(f"/proc/{sidecar.pid}/root") / str(out).lstrip("/")
    many = [f"10.{i // 250}.{i % 250}.1" for i in range(2000)]
    api.apply(
        endpoint_slice(
            "web-a",
            service="web",
            endpoints=[
                endpoint(a, pod=f"podlister-{'x' * 40}-{i:05d}", node=f"pool-{'n' * 30}")
                for i, a in enumerate(many)
            ],
        )
    )
    expected = sorted(many, key=lambda a: tuple(int(part) for part in a.split(".")))
    sidecar.wait_page(expected, timeout=20)
    document = json.loads(sidecar.wait_file("index.json", bool))
    assert document["compact"] is True
    assert document["members"][0] == {
        "address": "10.0.0.1",
        "pod": "",
        "node": "",
        "zone": "",
        "serving": True,
    }
    assert sidecar.events("write_compact")
    assert sidecar.probe("/readyz") == 200
    api.apply(slice_of("web-a", "10.0.0.1", "10.0.0.2"))
    sidecar.wait_page(["10.0.0.1", "10.0.0.2"])
    sidecar.wait_file("index.json", lambda text: json.loads(text)["compact"] is False)
