"""Soak: random churn with compactions, drops, clean ends and short stalls; the sidecar must end
with exactly the stand-in's truth, with bounded memory. 30 s in CI, 10 min with ``-m soak``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from kubestub import ApiStandIn, endpoint, endpoint_slice
from support.procstat import cpu_seconds, rss_kib
from support.sidecar_process import SidecarProcess

Start = Callable[..., SidecarProcess]


def churn(
    api: ApiStandIn,
    sidecar: SidecarProcess,
    seconds: float,
    rng: random.Random,
    ready: dict[int, set[int]],
) -> list[str]:
    """Apply random changes and faults for a while; return the truth after them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = rng.randrange(5)
        members = ready[s]
        members.symmetric_difference_update({rng.randrange(1, 60)})
        api.apply(
            endpoint_slice(
                f"web-{s}",
                service="web",
                endpoints=[endpoint(f"10.2.{s}.{i}") for i in sorted(members)],
            )
        )
        roll = rng.random()
        if roll < 0.01:
            api.expire_watches()
        elif roll < 0.02:
            api.drop_watches()
        elif roll < 0.03:
            api.end_watches()
        elif roll < 0.035:
            api.stall()
            time.sleep(0.3)
            api.stall(stalled=False)
        time.sleep(rng.uniform(0.001, 0.02))
        assert sidecar.process is not None
        assert sidecar.process.poll() is None, "the sidecar died"
    return [f"10.2.{s}.{i}" for s in range(5) for i in sorted(ready[s])]


def soak(api: ApiStandIn, start_sidecar: Start, seconds: float) -> None:
    rng = random.Random(20261123)
    sidecar = start_sidecar(extra_env={"PODLISTER_IDLE_TIMEOUT": "2"})
    sidecar.wait_addresses([])
    ready: dict[int, set[int]] = {s: set() for s in range(5)}
    churn(api, sidecar, min(10.0, seconds / 3), rng, ready)  # warm-up
    rss_before = rss_kib(sidecar.pid)
    rss_samples = [rss_before]
    cpu_before = cpu_seconds(sidecar.pid)
    started = time.monotonic()
    truth: list[str] = []
    while (left := seconds - (time.monotonic() - started)) > 0:
        truth = churn(api, sidecar, min(60.0, left), rng, ready)
        rss_samples.append(rss_kib(sidecar.pid))  # a sample a minute: a plateau or a slope
    elapsed = time.monotonic() - started
    sidecar.wait_addresses(truth, timeout=60)
    rss_after = rss_kib(sidecar.pid)
    cpu = cpu_seconds(sidecar.pid) - cpu_before
    restarts = {
        reason: sidecar.metric("podlister_watch_restarts_total", reason=reason)
        for reason in ("expired", "connection", "idle", "timeout", "resync")
    }
    report = [
        f"soak {elapsed:.0f}s: {len(truth)} ready at the end",
        f"RSS {rss_before} -> {rss_after} KiB (a minute apart: {rss_samples})",
        f"CPU {cpu / elapsed * 1000:.0f} mCPU",
        f"lists {sidecar.metric('podlister_lists_total', api='endpointslices'):.0f}",
        f"writes {sidecar.metric('podlister_writes_total'):.0f}",
        f"backoff {sidecar.metric('podlister_backoff_seconds_total'):.1f} s",
        f"restarts {restarts}",
    ]
    print("\n" + ", ".join(report))  # noqa: T201 - the soak reports what it saw
    assert rss_after - rss_before < 1024, "RSS grew by 1 MiB or more after warm-up"


@pytest.mark.timeout(180)
def test_short_soak(api: ApiStandIn, start_sidecar: Start) -> None:
    """30 s of churn and faults: the final files equal the truth, RSS grows < 1 MiB."""
    soak(api, start_sidecar, 30)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_long_soak(api: ApiStandIn, start_sidecar: Start) -> None:
    """10 min of churn and faults (opt-in: -m soak): the same assertions over a longer run."""
    soak(api, start_sidecar, 600)
