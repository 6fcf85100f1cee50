"""The real watch loop, in-process: scripted lists, watch lines and failures, a fake clock,
and backoff waits recorded instead of slept (``support/watch_script.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
import urllib3

from kubestub import endpoint, endpoint_slice
from sidecar.api import reflector
from sidecar.api.errors import ApiError, Malformed
from sidecar.api.policy import RULES
from sidecar.metrics import ErrorKind, Source
from sidecar.page.membership import parse_as
from support.watch_script import Run

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import pytest

    from sidecar.page.membership import SliceView

SLICE_A = endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")])
SLICE_B = endpoint_slice("web-b", service="web", endpoints=[endpoint("10.0.0.2")])


def event(kind: str, obj: dict[str, object], version: str) -> dict[str, object]:
    """A watch event whose object carries resourceVersion version."""
    changed = {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}  # type: ignore[dict-item]
    return {"type": kind, "object": changed}


def test_list_then_watch_publishes_every_change_and_resumes_where_it_was() -> None:
    """A list, then ADDED, MODIFIED, DELETED and a BOOKMARK: each change is published with
    the whole store; the next watch resumes from the bookmark's resourceVersion, with
    restart reasons initial then timeout, and no failure or wait.
    """
    emptied = endpoint_slice("web-a", service="web", endpoints=[])
    run = Run(
        [
            ([SLICE_A], "10"),
            [
                event("ADDED", SLICE_B, "11"),
                event("MODIFIED", emptied, "12"),
                event("DELETED", SLICE_B, "13"),
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
            ],
            [],
        ]
    ).go()
    assert [run.addresses(i) for i in range(4)] == [
        ["10.0.0.1"],
        ["10.0.0.1", "10.0.0.2"],
        ["10.0.0.2"],
        [],
    ]
    assert [call for call in run.source.calls if call[0] == "watch"] == [
        ("watch", Source.ENDPOINT_SLICES, "10"),
        ("watch", Source.ENDPOINT_SLICES, "20"),
    ]
    assert run.metric("podlister_watch_restarts_total", reason="initial") == 1
    # The second after the empty watch, the third when the script ran out.
    assert run.metric("podlister_watch_restarts_total", reason="timeout") == 2
    assert run.stop.waits == []
    assert run.stale == []


def test_expired_relists_at_once() -> None:
    """410 in a watch: the loop relists without waiting and resumes from the new list."""
    expired = ApiError(ErrorKind.EXPIRED, "too old", status=410)
    run = Run([([SLICE_A], "10"), expired, ([SLICE_B], "30"), []]).go()
    assert [call[0] for call in run.source.calls] == ["list", "raised", "list", "watch"]
    assert run.source.calls[-1][2] == "30"
    assert run.addresses() == ["10.0.0.2"]
    assert run.metric("podlister_watch_restarts_total", reason="expired") == 1
    assert run.stop.waits == []


def test_a_silent_watch_is_rewatched_at_once() -> None:
    """A read timeout (no line for the idle deadline) is no failure: re-watch, no wait."""
    timeout = urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")  # type: ignore[arg-type]
    run = Run([([SLICE_A], "10"), timeout, []]).go()
    assert run.metric("podlister_watch_restarts_total", reason="idle") == 1
    assert run.metric("podlister_errors_total", kind="idle") == 0
    assert run.stop.waits == []


def test_a_dropped_connection_is_a_failure_with_a_wait() -> None:
    """A connection reset in the middle of a watch is counted as a connection error, waited
    out (backoff), and followed by a fresh watch from the same resourceVersion.
    """
    run = Run([([SLICE_A], "10"), ConnectionResetError(104, "reset by peer"), []]).go()
    assert run.metric("podlister_errors_total", kind="connection") == 1
    assert run.metric("podlister_watch_restarts_total", reason="connection") == 1
    assert len(run.stop.waits) == 1
    assert run.source.calls[-1] == ("watch", Source.ENDPOINT_SLICES, "10")


def test_a_malformed_line_is_skipped_and_repaired_by_a_relist() -> None:
    """A line that is not JSON is counted and skipped; the next cycle relists (resync)."""
    run = Run(
        [([SLICE_A], "10"), [b"{not json", event("ADDED", SLICE_B, "11")], ([], "12"), []]
    ).go()
    assert run.metric("podlister_skipped_events_total", reason="malformed") == 1
    assert [call[0] for call in run.source.calls] == ["list", "watch", "list", "watch"]
    assert run.metric("podlister_watch_restarts_total", reason="resync") == 1
    assert run.addresses() == []


def test_failures_back_off_mark_the_page_stale_and_recover() -> None:
    """Two server errors: counted, each followed by a growing wait; the second marks the
    page stale; the list that then succeeds clears it.
    """
    error = ApiError(ErrorKind.SERVER, "boom", status=500)
    run = Run([error, error, ([SLICE_A], "10"), []]).go()
    assert run.metric("podlister_errors_total", kind="server") == 2
    assert len(run.stop.waits) >= 2
    assert 0 < run.stop.waits[0] <= run.stop.waits[1]
    assert run.stale[0] is not None
    assert run.stale[-1] is None
    assert run.addresses() == ["10.0.0.1"]


def test_a_watch_that_ends_at_once_is_an_error_not_a_timeout() -> None:
    """A watch with no line that ends within a second would be a hot loop: empty_watch,
    with a wait.
    """
    run = Run([([SLICE_A], "10"), []])
    run.source.watch_seconds = 0.0
    run.go()
    assert run.metric("podlister_errors_total", kind="empty_watch") == 1
    assert run.stop.waits


def test_an_error_event_is_a_watch_error() -> None:
    """An ERROR event inside the stream: the watch_error kind, a wait, then go on."""
    status = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}}
    run = Run([([SLICE_A], "10"), [status], []]).go()
    assert run.metric("podlister_errors_total", kind="watch_error") == 1


def test_without_endpointslices_it_falls_back_to_endpoints() -> None:
    """A 404 on the EndpointSlice list: the v1 Endpoints of the Service are listed instead."""
    endpoints = {
        "metadata": {"name": "web", "resourceVersion": "5"},
        "subsets": [{"addresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}],
    }
    missing = ApiError(ErrorKind.NOT_FOUND, "no such API", status=404)
    run = Run([missing, ([endpoints], "5"), []]).go()
    assert run.source.calls[:2] == [
        ("raised", Source.ENDPOINT_SLICES, "ApiError"),
        ("list", Source.ENDPOINTS, None),
    ]
    assert run.snapshots[-1].source is Source.ENDPOINTS
    assert run.addresses() == ["10.0.0.9"]


def test_unauthorized_reloads_the_credentials() -> None:
    """A 401 asks for the credentials to be read again before the retry."""
    run = Run([ApiError(ErrorKind.UNAUTHORIZED, "token", status=401), ([SLICE_A], "1"), []])
    assert run.go().unauthorized == 1


def test_a_parser_crash_is_malformed_and_relists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data no parser foresaw (here: the parser raises) ends the watch as malformed: counted,
    a wait, and a relist, since the store may be wrong.
    """
    run = Run([([SLICE_A], "10"), [event("ADDED", SLICE_B, "11")], ([SLICE_A], "12"), []])

    def fragile(api: Source) -> Callable[[Mapping[str, Any]], SliceView]:
        def parse_or_crash(obj: Mapping[str, Any]) -> SliceView:
            if obj["metadata"]["name"] == "web-b":
                raise ValueError("unforeseen")
            return parse_as(api)(obj)

        return parse_or_crash

    monkeypatch.setattr(reflector, "parse_as", fragile)
    run.go()
    assert run.metric("podlister_errors_total", kind="malformed") == 1
    assert [call[0] for call in run.source.calls] == ["list", "watch", "list", "watch"]
    assert run.stop.waits


def test_stop_interrupts_the_source_and_ends_the_loop() -> None:
    """stop() sets the event and interrupts the source's read; run() then returns at once."""
    run = Run([([SLICE_A], "10"), []])
    interrupted: list[bool] = []
    run.source.interrupt = lambda: interrupted.append(True)  # type: ignore[method-assign]
    run.watcher.stop()
    run.go()
    assert interrupted == [True]
    assert run.source.calls == []


def test_forbidden_is_logged_once_per_streak_with_what_to_grant() -> None:
    """Two 403s in a streak: one `forbidden` line naming the ServiceAccount, the verb, the
    resource and the grant, no `api_error` line for them; a new streak logs again.
    """
    run = Run([])
    streak = run.watcher._streak
    rule = RULES[ErrorKind.FORBIDDEN]

    def forbidden(verb: str) -> ApiError:
        message = 'User "system:serviceaccount:default:web" cannot list'
        return ApiError(
            ErrorKind.FORBIDDEN, message, status=403, verb=verb, resource="endpointslices"
        )

    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            streak.failed(forbidden("list"), rule)
        streak.reached()
        streak.failed(forbidden("watch"), rule)
    found = [entry for entry in logs if entry["event"] == "forbidden"]
    assert [entry["verb"] for entry in found] == ["list", "watch"]
    assert found[0]["service_account"] == "system:serviceaccount:default:web"
    assert found[0]["resource"] == "endpointslices"
    assert "RoleBinding" in found[0]["hint"]
    assert not [entry for entry in logs if entry["event"] == "api_error"]


def test_malformed_data_is_logged_once_per_streak() -> None:
    """A server sending garbage cannot flood the log: one api_error line per streak."""
    run = Run([])
    streak = run.watcher._streak
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            streak.failed(Malformed("garbage"), RULES[ErrorKind.MALFORMED])
    assert [entry["kind"] for entry in logs if entry["event"] == "api_error"] == ["malformed"]
