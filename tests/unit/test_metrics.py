"""The metrics: names and help texts of the contract, each label set from its closed enum."""

from __future__ import annotations

from prometheus_client import generate_latest

from sidecar.metrics import ErrorKind, Metrics, RestartReason, SkipReason, Source


def test_the_documented_names_and_help_texts() -> None:
    """Every metric the README names is there, each help text lists its label values, and
    two sets of metrics do not share a registry (nothing global).
    """
    first, second = Metrics(), Metrics()
    first.errors.labels(ErrorKind.WRITE).inc()
    text = generate_latest(first.registry).decode()
    for name in (
        "podlister_endpoints",
        "podlister_last_write_timestamp_seconds",
        "podlister_watch_restarts_total",
        "podlister_lists_total",
        "podlister_watch_events_total",
        "podlister_skipped_events_total",
        "podlister_errors_total",
        "podlister_backoff_seconds_total",
        "podlister_writes_total",
        "podlister_event_to_write_seconds",
        "podlister_ready",
        "podlister_watch_healthy",
    ):
        assert f"# TYPE {name} " in text, name
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
