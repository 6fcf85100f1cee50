"""The metrics: names and help texts of the contract, each label set from its closed enum."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from sidecar.metrics import ErrorKind, Metrics, RestartReason, SkipReason, Source
from support import documented


def test_the_documented_names_and_help_texts() -> None:
    """The metrics are exactly those the README names (each way round), each help text lists
    its label values, and two sets of metrics do not share a registry (nothing global).
    """
    first, second = Metrics(), Metrics()
    first.errors.labels(ErrorKind.WRITE).inc()
    text = generate_latest(first.registry).decode()
    typed = re.findall(r"^# TYPE (podlister_\w+) ", text, re.MULTILINE)
    declared = {name for name in typed if not name.endswith("_created")}  # the client's own
    assert declared == set(documented.metric_names())
    assert all(kind in text for kind in ("write_compact", "forbidden", "template"))
    assert all(reason in text for reason in (*RestartReason, *SkipReason, *Source))
    assert second.registry.get_sample_value("podlister_errors_total", {"kind": "write"}) is None


def test_expired_is_no_error_label() -> None:
    """A 410 is normal (a relist): the errors metric's help does not offer it as a kind."""
    errors_help = next(
        line
        for line in generate_latest(Metrics().registry).decode().splitlines()
        if line.startswith("# HELP podlister_errors_total")
    )
    assert "expired" not in errors_help
    assert "connection" in errors_help
