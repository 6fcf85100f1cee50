"""Logging: one JSON object per line, ISO UTC timestamps, lines below the level dropped."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import structlog

from sidecar.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """The test configures structlog for the process; put the defaults back after it."""
    yield
    structlog.reset_defaults()


def test_json_lines_at_the_level_given(capsys: pytest.CaptureFixture[str]) -> None:
    """At info, a debug line is dropped; info and warning lines are one JSON object each, with
    the event, the level, an ISO UTC timestamp and the fields.
    """
    configure_logging("json", "info")
    log = structlog.get_logger("test")
    log.debug("write", files=["index.html"])
    log.info("membership_changed", added=["10.0.0.1"])
    log.warning("api_error", kind="connection")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("membership_changed", "info"),
        ("api_error", "warning"),
    ]
    assert lines[0]["added"] == ["10.0.0.1"]
    assert lines[0]["timestamp"].endswith("Z")


def test_debug_shows_each_write(capsys: pytest.CaptureFixture[str]) -> None:
    """At debug, the write lines appear too; at error, a warning does not."""
    configure_logging("json", "debug")
    structlog.get_logger("test").debug("write", files=["index.html"])
    assert json.loads(capsys.readouterr().out)["event"] == "write"
    configure_logging("json", "error")
    structlog.get_logger("test").warning("api_error")
    assert capsys.readouterr().out == ""
