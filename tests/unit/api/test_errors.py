"""Every failure of a request becomes an ApiError of a kind: HTTP statuses, ERROR events,
broken connections, each with any wait the server asked for.
"""

from __future__ import annotations

import json

import pytest
import urllib3

from sidecar.api.errors import from_event, from_status, from_transport
from sidecar.metrics import ErrorKind


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, ErrorKind.UNAUTHORIZED),
        (403, ErrorKind.FORBIDDEN),
        (404, ErrorKind.NOT_FOUND),
        (410, ErrorKind.EXPIRED),
        (429, ErrorKind.THROTTLED),
        (418, ErrorKind.CLIENT),
        (503, ErrorKind.SERVER),
        ("500", ErrorKind.CLIENT),  # not an int: not trusted as a 5xx
    ],
)
def test_each_status_has_its_kind(status: object, kind: ErrorKind) -> None:
    """The status picks the kind; the Status body's message is the error's text."""
    body = json.dumps({"kind": "Status", "message": "why it failed"}).encode()
    error = from_status(status, body, {}, "reason")
    assert error.kind is kind
    assert str(error) == "why it failed"


def test_retry_after_from_the_header_or_the_body() -> None:
    """Retry-After wins; else the Status body's details.retryAfterSeconds; a body that is not
    JSON is the message as it is.
    """
    body = json.dumps({"message": "slow down", "details": {"retryAfterSeconds": 7}}).encode()
    assert from_status(429, body, {"Retry-After": "2.5"}).retry_after == 2.5
    assert from_status(429, body, {}).retry_after == 7
    plain = from_status(500, b"<html>gateway</html>", None)
    assert (plain.retry_after, str(plain)) == (0.0, "<html>gateway</html>")


def test_an_error_event_is_a_watch_error_unless_it_says_expired() -> None:
    """An ERROR event with 410 or reason Expired/Gone relists; any other is a watch error
    carrying its code and retryAfterSeconds.
    """
    assert from_event({"code": 410}).kind is ErrorKind.EXPIRED
    assert from_event({"reason": "Gone"}).kind is ErrorKind.EXPIRED
    error = from_event({"code": 500, "message": "etcd", "details": {"retryAfterSeconds": 3}})
    assert (error.kind, error.status, error.retry_after) == (ErrorKind.WATCH_ERROR, 500, 3.0)


def test_a_read_timeout_is_idle_a_refused_connection_is_not() -> None:
    """A read that timed out is idle (a silent stream); a refused connection, which urllib3
    reports as a ConnectTimeoutError too, is a connection error.
    """
    timeout = urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")  # type: ignore[arg-type]
    refused = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    assert from_transport(timeout).kind is ErrorKind.IDLE
    assert from_transport(refused).kind is ErrorKind.CONNECTION
    assert from_transport(ConnectionResetError(104, "reset")).kind is ErrorKind.CONNECTION
