"""Every documented metric, scraped from the real process, agrees with what happened."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kubestub import ApiStandIn, endpoint, endpoint_slice
from support import documented
from support.polling import wait_until
from support.ports import free_port
from support.sidecar_process import SidecarProcess, write_kubeconfig

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def web(*addresses: str, not_ready: tuple[str, ...] = ()) -> dict[str, object]:
    endpoints = [endpoint(a) for a in addresses]
    endpoints += [endpoint(a, ready=False) for a in not_ready]
    return endpoint_slice("web-a", service="web", endpoints=endpoints)


def test_metrics_tell_the_truth_through_scale_up_outage_and_recovery(
    tmp_path: Path, start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Scale-up, an API outage and the recovery: the endpoint gauges match the page, ready and
    watch_healthy match /readyz and the API's state, lists, writes, errors, backoff and the
    latency histogram count what happened, and the last-write time is the page's.
    """
    port = free_port()
    kubeconfig = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    api = ApiStandIn(port=port, bookmark_interval=0.5).start()
    try:
        api.apply(web("10.0.0.1"))
        sidecar = start_sidecar(kubeconfig=kubeconfig)
        sidecar.wait_page(["10.0.0.1"])
        api.wait_watching()
        text = sidecar.metrics_text()
        assert all(f"# TYPE {name} " in text for name in documented.metric_names())
        sidecar.wait_metric("podlister_ready", 1)
        assert sidecar.probe("/readyz") == 200

        api.apply(web("10.0.0.1", "10.0.0.2", "10.0.0.3", not_ready=("10.0.0.4",)))
        sidecar.wait_page(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        wait_until(lambda: sidecar.metric("podlister_endpoints", state="not_ready") == 1, timeout=5)
        sidecar.wait_metric("podlister_endpoints", 3, state="ready")
        sidecar.wait_metric("podlister_endpoints", 0, state="terminating")
        sidecar.wait_metric("podlister_lists_total", 1, api="endpointslices")
        assert sidecar.metric("podlister_watch_events_total", type="MODIFIED") == 1
        sidecar.wait_metric("podlister_watch_healthy", 1)
        writes = sidecar.metric("podlister_writes_total")
        assert writes == 2
        assert sidecar.metric("podlister_event_to_write_seconds_count") == writes
        written_at = (sidecar.output_dir / "index.json").stat().st_mtime
        assert abs(sidecar.metric("podlister_last_write_timestamp_seconds") - written_at) < 1
        sidecar.wait_metric("podlister_errors_total", 0, kind="connection")
        last_version = api.resource_version
    finally:
        api.stop()

    # The outage: the API is gone; readiness stays, the watch is unhealthy, errors back off.
    wait_until(lambda: sidecar.metric("podlister_watch_healthy") == 0, timeout=10)
    wait_until(lambda: sidecar.metric("podlister_errors_total", kind="connection") >= 2, timeout=10)
    assert sidecar.metric("podlister_backoff_seconds_total") >= 0.8
    # Through the outage: still ready, still the list from before (states, not updates).
    assert sidecar.metric("podlister_ready") == 1
    assert sidecar.probe("/readyz") == 200
    assert sidecar.metric("podlister_endpoints", state="ready") == 3

    with ApiStandIn(port=port, bookmark_interval=0.5) as back:
        # A new API counts resourceVersions from the start: catch up with the old one, so the
        # change is newer than the point the sidecar resumes from.
        while back.resource_version < last_version:
            back.apply(web("10.0.0.1", "10.0.0.2", "10.0.0.3", not_ready=("10.0.0.4",)))
        back.apply(web("10.0.0.5"))
        sidecar.wait_page(["10.0.0.5"], timeout=40)
        wait_until(lambda: sidecar.metric("podlister_watch_healthy") == 1, timeout=5)
        wait_until(lambda: sidecar.metric("podlister_endpoints", state="ready") == 1, timeout=5)
        sidecar.wait_metric("podlister_endpoints", 0, state="not_ready")
        sidecar.wait_metric("podlister_ready", 1)
        started = time.time()
        assert started - sidecar.metric("podlister_last_write_timestamp_seconds") < 10
