"""The real sidecar process against the API stand-in: the contract end to end."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from kubestub import ApiStandIn, endpoint, endpoint_slice
from support.page_html import listed
from support.polling import wait_until
from support.ports import free_port
from support.sidecar_process import PAGE_FILES, SidecarProcess, run_to_exit, write_kubeconfig

if TYPE_CHECKING:
    from pathlib import Path

Start = Callable[..., SidecarProcess]


def slice_of(
    name: str, *addresses: str, service: str = "web", namespace: str = "default"
) -> dict[str, object]:
    return endpoint_slice(
        name,
        service=service,
        namespace=namespace,
        endpoints=[endpoint(a, pod=f"pod-{a}") for a in addresses],
    )


def test_first_page_then_follows_changes(api: ApiStandIn, start_sidecar: Start) -> None:
    """The list gives the first page; adds, modifications and deletions follow over the watch."""
    api.apply(slice_of("web-a", "10.0.0.2", "10.0.0.1"))
    sidecar = start_sidecar()
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])
    wait_until(lambda: sidecar.probe("/readyz") == 200, timeout=5, what="ready")
    api.apply(slice_of("web-b", "10.0.0.3"))
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    api.apply(slice_of("web-a", "10.0.0.2"))
    sidecar.wait_addresses(["10.0.0.2", "10.0.0.3"])
    api.delete("endpointslices", "web-b")
    sidecar.wait_addresses(["10.0.0.2"])
    sidecar.wait_file("index.txt", lambda text: text == "10.0.0.2\n")
    sidecar.wait_file("index.html", lambda html: listed(html) == ["10.0.0.2"])
    assert len(api.requests_for("list")) == 1


def test_only_the_services_slices_count(api: ApiStandIn, start_sidecar: Start) -> None:
    """Slices of other Services, or of the same name in another namespace, are not listed."""
    api.apply(slice_of("web-a", "10.0.0.1"))
    api.apply(slice_of("api-a", "10.0.0.9", service="api"))
    api.apply(slice_of("web-x", "10.0.0.8", namespace="other"))
    sidecar = start_sidecar()
    sidecar.wait_addresses(["10.0.0.1"])
    api.apply(slice_of("api-b", "10.0.0.7", service="api"))
    api.apply(slice_of("web-b", "10.0.0.5"))
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.5"])
    assert api.requests_for("list")[0].params["labelSelector"] == "kubernetes.io/service-name=web"


@pytest.mark.usefixtures("api")
def test_zero_endpoints_written_explicitly(start_sidecar: Start) -> None:
    """A Service with no slices gets an empty list written, and the sidecar becomes ready."""
    sidecar = start_sidecar()
    sidecar.wait_addresses([])
    wait_until(lambda: sidecar.probe("/readyz") == 200, timeout=5, what="ready")
    sidecar.wait_file("index.txt", lambda text: text == "")


def test_pod_identity_on_the_page(api: ApiStandIn, start_sidecar: Start) -> None:
    """PODLISTER_POD_IP and _NAME from the downward API mark the serving pod on the pages."""
    api.apply(slice_of("web-a", "10.0.0.1", "10.0.0.2"))
    sidecar = start_sidecar(
        extra_env={"PODLISTER_POD_IP": "10.0.0.2", "PODLISTER_POD_NAME": "web-7"}
    )
    sidecar.wait_addresses(["10.0.0.1", "10.0.0.2"])
    document = json.loads((sidecar.output_dir / "index.json").read_text())
    assert document["served_by"] == {"pod_name": "web-7", "pod_ip": "10.0.0.2"}
    sidecar.wait_file(
        "index.html", lambda html: 'aria-current="true"><code>10.0.0.2</code>' in html
    )


def test_burst_is_coalesced(api: ApiStandIn, start_sidecar: Start) -> None:
    """A scale-up from 1 to 50 pods in a burst ends with all 50 listed, in far fewer writes."""
    api.apply(slice_of("web-a", "10.0.1.1"))
    sidecar = start_sidecar()
    sidecar.wait_addresses(["10.0.1.1"])
    addresses = [f"10.0.1.{i}" for i in range(1, 51)]
    for count in range(2, 51):
        api.apply(slice_of("web-a", *addresses[:count]))
    sidecar.wait_addresses(addresses)
    wait_until(
        lambda: sidecar.metric("podlister_watch_events_total", type="MODIFIED") == 49, timeout=5
    )
    writes = sidecar.metric("podlister_writes_total")
    assert writes < 25, f"{writes} writes for 49 events: not coalesced"


def test_watch_asks_for_bookmarks_and_a_spread_timeout(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """Each watch asks for bookmarks and a timeout in [max/2, max] of PODLISTER_WATCH_TIMEOUT."""
    start_sidecar(extra_env={"PODLISTER_WATCH_TIMEOUT": "40"})
    watch = wait_until(lambda: api.requests_for("watch"), timeout=10, what="a watch")[0]
    assert watch.params["allowWatchBookmarks"] == "true"
    assert 20 <= int(watch.params["timeoutSeconds"]) <= 40


def test_list_follows_continue_tokens(tmp_path: Path, start_sidecar: Start) -> None:
    """A list split into pages by the server is followed to the end (10,000 endpoints in
    100 slices; the server sends at most 15 a page, fewer than the sidecar's limit of 20).
    """
    with ApiStandIn(max_page_size=15) as api:
        expected = []
        for s in range(100):
            addresses = [f"10.{s // 100}.{s % 100}.{i}" for i in range(1, 101)]
            expected.extend(addresses)
            api.apply(
                endpoint_slice(
                    f"web-{s}", service="web", endpoints=[endpoint(a) for a in addresses]
                )
            )
        from support.sidecar_process import write_kubeconfig

        sidecar = start_sidecar(kubeconfig=write_kubeconfig(tmp_path / "kc-paged", api.url))
        sidecar.wait_addresses(
            sorted(expected, key=lambda a: tuple(int(x) for x in a.split("."))), timeout=20
        )
        lists = api.requests_for("list")
        assert len(lists) == 7
        assert all(r.params["limit"] == "20" for r in lists)
        assert all("continue" in r.params for r in lists[1:])


def test_sigterm_exits_zero_quickly_without_partial_files(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """SIGTERM ends the process with 0 within 2 s, leaving only whole index files."""
    api.apply(slice_of("web-a", "10.0.0.1"))
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    sent = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait_exit(timeout=5) == 0
    assert time.monotonic() - sent < 2.0
    assert sorted(p.name for p in sidecar.output_dir.iterdir()) == PAGE_FILES
    assert sidecar.events("stop")


def test_missing_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    """Without PODLISTER_SERVICE the program exits 2 with one line naming the variable."""
    result = run_to_exit({"PODLISTER_OUTPUT_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "podlister-sidecar: PODLISTER_SERVICE is required"
    ]


def test_unusable_settings_at_start_exit_with_the_reason(tmp_path: Path) -> None:
    """A template folder that is not a folder: exit 2 with one plain line naming the
    variable, as for any bad setting; no API configuration at all: exit 2 with one JSON log
    line naming the kubeconfig it tried; a busy health port: exit 1 naming the port.
    """
    base = {
        "PODLISTER_SERVICE": "web",
        "PODLISTER_OUTPUT_DIR": str(tmp_path),
        "PODLISTER_LOG_FORMAT": "json",
        "PODLISTER_HEALTH_ADDR": f"127.0.0.1:{free_port()}",
    }
    kubeconfig = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    not_a_folder = run_to_exit(
        {**base, "KUBECONFIG": str(kubeconfig), "PODLISTER_TEMPLATE_DIR": str(kubeconfig)}
    )
    assert not_a_folder.returncode == 2
    assert not_a_folder.stdout == ""
    assert not_a_folder.stderr.splitlines() == [
        f"podlister-sidecar: PODLISTER_TEMPLATE_DIR {kubeconfig} is not a directory"
    ]

    no_config = run_to_exit({**base, "KUBECONFIG": str(tmp_path / "absent")})
    assert no_config.returncode == 2
    reason = str(last_record(no_config.stdout)["reason"])
    assert "no Kubernetes API configuration" in reason
    assert str(tmp_path / "absent") in reason

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        taken = run_to_exit(
            {**base, "KUBECONFIG": str(kubeconfig), "PODLISTER_HEALTH_ADDR": f"127.0.0.1:{port}"}
        )
    assert taken.returncode == 1
    assert last_record(taken.stdout)["event"] == "health_bind_failed"


def last_record(stdout: str) -> dict[str, object]:
    lines = stdout.strip().splitlines()
    assert all(line.startswith("{") for line in lines), stdout
    return dict(json.loads(lines[-1]))


def test_an_output_folder_that_is_not_a_folder_exits_2(tmp_path: Path) -> None:
    """PODLISTER_OUTPUT_DIR missing, or a file: exit 2 with one plain line naming it, as for
    any bad setting (in a pod the emptyDir is mounted before the sidecar starts, so this is a
    wrong manifest; before: the third of three JSON lines).
    """
    kubeconfig = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    for wrong in (tmp_path / "not-there", kubeconfig):
        result = run_to_exit(
            {
                "PODLISTER_SERVICE": "web",
                "PODLISTER_OUTPUT_DIR": str(wrong),
                "PODLISTER_LOG_FORMAT": "json",
                "PODLISTER_HEALTH_ADDR": f"127.0.0.1:{free_port()}",
                "KUBECONFIG": str(kubeconfig),
            }
        )
        assert result.returncode == 2, result.stdout
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"podlister-sidecar: PODLISTER_OUTPUT_DIR {wrong} is not a directory"
        ]


def test_a_service_name_nobody_uses_is_said_not_shown_as_zero_pods(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """PODLISTER_SERVICE with a typo (no EndpointSlice names it): a warning line saying so,
    podlister_endpoint_objects 0 for an alert, index.json's objects 0 and the page saying the
    Service has no endpoints at all (before: "0 pods behind podlistr" and an info line).
    """
    api.apply(slice_of("web-a", "10.0.0.1"))
    sidecar = start_sidecar(service="podlistr")
    sidecar.wait_file("index.json", lambda text: json.loads(text)["objects"] == 0)
    assert sidecar.events("no_endpoint_objects")
    sidecar.wait_metric("podlister_endpoint_objects", 0)
    html = (sidecar.output_dir / "index.html").read_text()
    assert '<p id="no-objects" class="banner warn">' in html


def test_an_unknown_setting_is_a_warning(api: ApiStandIn, start_sidecar: Start) -> None:
    """A PODLISTER_* variable the sidecar does not know (a typo such as
    PODLISTER_IDLE_TIMEOUTS) is one warning naming it; the sidecar runs on.
    """
    api.apply(slice_of("web-a", "10.0.0.1"))
    sidecar = start_sidecar(extra_env={"PODLISTER_IDLE_TIMEOUTS": "5"})
    sidecar.wait_page(["10.0.0.1"])
    [warning] = sidecar.events("unknown_settings")
    assert warning["variables"] == ["PODLISTER_IDLE_TIMEOUTS"]
    assert "PODLISTER_IDLE_TIMEOUT" in warning["known"]


def test_the_programming_latency_is_exported_and_shown(
    api: ApiStandIn, start_sidecar: Start
) -> None:
    """A slice change stamped with a trigger time after the start (as the EndpointSlice
    controller stamps it): the sidecar's histogram counts it once its page is written, and
    index.json says how long it took; the first list's stamp (older) is not counted.
    """
    older = "2020-01-01T00:00:00Z"
    api.apply(
        endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")], triggered_at=older)
    )
    sidecar = start_sidecar()
    sidecar.wait_page(["10.0.0.1"])
    api.wait_watching()
    stamp = dt.datetime.now(dt.UTC).isoformat()
    api.apply(
        endpoint_slice(
            "web-a",
            service="web",
            endpoints=[endpoint("10.0.0.1"), endpoint("10.0.0.2")],
            triggered_at=stamp,
        )
    )
    sidecar.wait_page(["10.0.0.1", "10.0.0.2"])
    sidecar.wait_metric("podlister_network_programming_duration_seconds_count", 1)
    latency = json.loads((sidecar.output_dir / "index.json").read_text())["programming_latency_ms"]
    assert isinstance(latency, int)
    assert 0 <= latency < 10_000
