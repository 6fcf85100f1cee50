"""Reading the API's output: event parsing that no input can break, capped lines and lists."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from kubestub import endpoint, endpoint_slice
from sidecar.api.errors import ApiError, Malformed, from_event, seconds
from sidecar.api.stream import MAX_LINE_BYTES, lines, list_page, parse_event
from sidecar.metrics import ErrorKind
from support.watch_script import Run

REAL_EVENTS: list[dict[str, Any]] = [
    {
        "type": "ADDED",
        "object": endpoint_slice(
            "web-a", service="web", endpoints=[endpoint("10.0.0.1"), endpoint("10.0.0.2")]
        ),
    },
    {"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "metadata": {"resourceVersion": "7"}}},
    {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
]
STRANGE_VALUES: list[Any] = [None, [], {}, "", "abc", 0, -1, 1e308, True, [1, [2]], {"a": {}}]


def mutate(value: Any, rng: random.Random) -> Any:
    """Replace, drop or nest one part of a JSON value at random."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        changed = dict(value)
        if rng.random() < 0.2:
            del changed[key]
        else:
            changed[key] = mutate(value[key], rng)
        return changed
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = rng.randrange(len(value))
        return [*value[:index], mutate(value[index], rng), *value[index + 1 :]]
    return copy.deepcopy(rng.choice(STRANGE_VALUES))


def test_no_mutated_event_escapes_classification() -> None:
    """20,000 seeded mutations of real events (shapes, types, truncations, garbage bytes) fed
    to the watch loop's own line handler: each is applied, skipped (counted), or raises an
    ApiError (expired, or another kind), which the loop catches; never anything else.
    """
    run = Run([])
    handle = run.watcher.handle_line
    rng = random.Random(20261125)
    outcomes: dict[str, int] = {}
    for _ in range(20_000):
        event = mutate(rng.choice(REAL_EVENTS), rng)
        line = json.dumps(event).encode()
        if rng.random() < 0.1:
            line = line[: rng.randrange(len(line) + 1)]
        if rng.random() < 0.05:
            line = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        try:
            handle(line)
            outcome = "handled"
        except ApiError as exc:
            outcome = "expired" if exc.kind is ErrorKind.EXPIRED else "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert set(outcomes) == {"handled", "expired", "error"}
    assert run.metric("podlister_skipped_events_total", reason="malformed") > 0
    assert run.metric("podlister_skipped_events_total", reason="unknown_type") > 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"type": ["ADDED"], "object": {}}', "malformed"),
        (b'{"type": "SURPRISE", "object": {}}', "unknown_type"),
        (b'{"type": "ADDED", "object": []}', "malformed"),
        (b"[1, 2]", "malformed"),
        (b"[" * 100_000, "malformed"),
    ],
)
def test_malformed_lines(line: bytes, reason: str) -> None:
    """A type that is not a string, an unknown type, a non-object, deep nesting: Malformed."""
    with pytest.raises(Malformed) as caught:
        parse_event(line)
    assert caught.value.reason == reason


def test_error_events_with_odd_codes() -> None:
    """An ERROR event with code "abc" is a watch error (code 0), not a crash; 410 relists."""
    assert from_event({"code": "abc", "message": "x"}).kind is ErrorKind.WATCH_ERROR
    assert from_event({"code": 410}).kind is ErrorKind.EXPIRED
    assert from_event({"reason": "Expired"}).kind is ErrorKind.EXPIRED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("1.5", 1.5),
        (" 2 ", 2.0),
        ("\u00b2", 0.0),
        ("1e9", 0.0),
        ("-1", 0.0),
        (2, 2.0),
        (True, 0.0),
        (None, 0.0),
        ("100000", 300.0),
        (float("nan"), 0.0),
    ],
)
def test_retry_after_seconds(value: object, expected: float) -> None:
    """Retry-After and retryAfterSeconds: decimal seconds, fractions too, capped, else 0."""
    assert seconds(value) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"items": []}',
        b'{"metadata": [], "items": []}',
        b'{"metadata": {}, "items": {"a": 1}}',
        b'{"metadata": {}, "items": [1]}',
        b"not json",
    ],
)
def test_unusable_list_pages_are_malformed(body: bytes) -> None:
    """A list page without object metadata or with items that are not objects is Malformed."""
    with pytest.raises(Malformed):
        list_page(body)


def test_a_usable_list_page() -> None:
    """Items, resourceVersion and continue token of a page; null items is an empty page."""
    body = b'{"metadata": {"resourceVersion": "5", "continue": "c1"}, "items": null}'
    assert list_page(body) == ([], "5", "c1")


def test_lines_are_split_across_chunks_and_capped() -> None:
    """Events split over chunks are joined; a line past MAX_LINE_BYTES is Malformed."""
    assert list(lines([b'{"a"', b":1}\n{", b'"b":2}\n'])) == [b'{"a":1}', b'{"b":2}']
    endless = [b"x" * (1024 * 1024)] * (MAX_LINE_BYTES // (1024 * 1024) + 2)
    with pytest.raises(Malformed, match="longer than"):
        list(lines(endless))


def test_a_long_line_in_small_chunks_comes_out_whole() -> None:
    """A line of 4 MiB less one byte in 65,536 chunks of 64 bytes, then a short one: both come
    out whole (a splitter that scanned its whole buffer again for every chunk would read
    ~140 GB for this and run into the test's timeout).
    """
    long_line = b"x" * (MAX_LINE_BYTES - 1)
    data = long_line + b"\n" + b"short\n"
    chunks = [data[i : i + 64] for i in range(0, len(data), 64)]
    assert len(chunks) > 65_536
    assert list(lines(chunks)) == [long_line, b"short"]


def test_blank_lines_are_dropped_and_a_last_line_without_newline_kept() -> None:
    """Keep-alive newlines between events are not events; the last line needs no newline."""
    assert list(lines([b"\n\n{}\n", b"  \n", b"{}"])) == [b"{}", b"{}"]
