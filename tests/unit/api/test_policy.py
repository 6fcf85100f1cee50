"""The error policy: one rule per kind, and a streak's counting, waiting and logging."""

from __future__ import annotations

import datetime as dt
import random

import structlog

from sidecar.api.errors import ApiError
from sidecar.api.policy import RULES, Streak
from sidecar.backoff import Backoff
from sidecar.metrics import ErrorKind, Metrics

MOMENT = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
API_KINDS = set(ErrorKind) - {
    ErrorKind.WRITE,
    ErrorKind.WRITE_COMPACT,
    ErrorKind.RENDER_COMPACT,
    ErrorKind.TEMPLATE,
}


def streak() -> tuple[Streak, Metrics]:
    metrics = Metrics()
    made = Streak(
        metrics=metrics,
        backoff=Backoff(rng=random.Random(1)),
        host="https://api.test",
        namespace="shop",
        now=lambda: MOMENT,
    )
    return made, metrics


def test_every_api_kind_has_a_rule_and_only_data_and_age_relist() -> None:
    """The table covers every kind an API request can end in; expired and malformed are the
    kinds that relist, expired the only one that is no failure.
    """
    assert set(RULES) == API_KINDS
    assert {kind for kind, rule in RULES.items() if rule.relist} == {
        ErrorKind.EXPIRED,
        ErrorKind.MALFORMED,
    }
    assert {kind for kind, rule in RULES.items() if not rule.failure} == {ErrorKind.EXPIRED}
    assert [kind for kind, rule in RULES.items() if rule.reload_credentials] == [
        ErrorKind.UNAUTHORIZED
    ]


def test_a_streak_counts_waits_longer_and_turns_the_page_stale() -> None:
    """Each failure is counted and waits a longer step; from the second the page is stale,
    since the first; the API's answer ends the streak.
    """
    made, metrics = streak()
    error = ApiError(ErrorKind.SERVER, "boom", status=500)
    first = made.failed(error, RULES[error.kind])
    assert made.stale_since is None
    second = made.failed(error, RULES[error.kind])
    assert made.stale_since == MOMENT
    assert 0 < first < second
    assert metrics.registry.get_sample_value("podlister_errors_total", {"kind": "server"}) == 2
    assert metrics.registry.get_sample_value("podlister_watch_healthy") == 0
    made.reached()
    assert (made.failures, made.stale_since) == (0, None)
    assert metrics.registry.get_sample_value("podlister_watch_healthy") == 1


def test_retry_after_is_waited_at_least() -> None:
    """A server asking for 20 s gets at least 20 s, whatever the backoff step."""
    made, _ = streak()
    error = ApiError(ErrorKind.THROTTLED, "slow down", status=429, retry_after=20.0)
    assert made.failed(error, RULES[error.kind]) >= 20.0


def test_connection_errors_are_logged_at_every_retry_with_where() -> None:
    """Retries are the story of an outage: each one is an api_error line with the kind, the
    verb, the resource, the host and the wait.
    """
    made, _ = streak()
    error = ApiError(ErrorKind.CONNECTION, "refused", verb="watch", resource="endpointslices")
    with structlog.testing.capture_logs() as logs:
        made.failed(error, RULES[error.kind])
        made.failed(error, RULES[error.kind])
    assert [(line["event"], line["verb"], line["host"]) for line in logs] == [
        ("api_error", "watch", "https://api.test"),
    ] * 2
    assert logs[0]["log_level"] == "warning"
