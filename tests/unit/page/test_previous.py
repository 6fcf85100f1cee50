"""The page an earlier run left: read back for the same Service, ignored otherwise."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import pytest

from sidecar.page.document import PageData
from sidecar.page.history import Change
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.previous import parse_previous, read_previous
from support.pages import files

if TYPE_CHECKING:
    from pathlib import Path

MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
SHOWN = Membership(
    ready=(Member("10.0.0.1", "web-a", "n1"), Member("fd00::1", "web-b", "n2")),
    terminating=(Member("10.0.0.9", "web-z", "n1"),),
)


def written_page(tmp_path: Path) -> Path:
    page = PageData(
        service="web",
        namespace="shop",
        membership=SHOWN,
        generated_at=MOMENT,
        changes=(
            Change(at=MOMENT, added=("10.0.0.1",), removed=(), added_count=1, removed_count=0),
        ),
        programming_latency=0.75,
    )
    (tmp_path / "index.json").write_bytes(files(page)["index.json"])
    return tmp_path


def test_the_page_we_wrote_reads_back(tmp_path: Path) -> None:
    """Membership, history, source and the latest change's latency of a page we wrote come
    back as they were.
    """
    previous = read_previous(written_page(tmp_path), service="web", namespace="shop")
    assert previous is not None
    assert previous.membership == SHOWN
    assert previous.changes[0].added == ("10.0.0.1",)
    assert previous.changes[0].at == MOMENT
    assert previous.source == "endpointslices"
    assert previous.programming_latency == 0.75


@pytest.mark.parametrize(("service", "namespace"), [("api", "shop"), ("web", "other")])
def test_another_services_page_is_ignored(tmp_path: Path, service: str, namespace: str) -> None:
    """A page of another Service or namespace is not ours to serve."""
    assert read_previous(written_page(tmp_path), service=service, namespace=namespace) is None


@pytest.mark.parametrize(
    "document",
    [
        [],
        "text",
        {"service": "web", "namespace": "shop", "members": "x"},
        {"service": "web", "namespace": "shop", "members": [], "changes": [{"at": 5}]},
        {"service": "web", "namespace": "shop", "members": [], "changes": [{"at": "yesterday"}]},
    ],
)
def test_hostile_documents_are_ignored(document: object) -> None:
    """Anything that is not a page of ours in a shape we wrote gives None, never an error."""
    assert parse_previous(document, service="web", namespace="shop") is None


def test_missing_or_broken_files_are_ignored(tmp_path: Path) -> None:
    """No file, a half file or a directory in its place: no previous page."""
    assert read_previous(tmp_path, service="web", namespace="shop") is None
    (tmp_path / "index.json").write_text('{"service": "web", "names')
    assert read_previous(tmp_path, service="web", namespace="shop") is None
    (tmp_path / "index.json").unlink()
    (tmp_path / "index.json").mkdir()
    assert read_previous(tmp_path, service="web", namespace="shop") is None


@pytest.mark.parametrize("latency", [True, -1, 1.5, "7", None])
def test_a_latency_that_is_not_whole_milliseconds_reads_as_none(
    tmp_path: Path, latency: object
) -> None:
    """A programming_latency_ms that is not a whole, non-negative number of ms is unknown."""
    document = json.loads((written_page(tmp_path) / "index.json").read_text())
    document["programming_latency_ms"] = latency
    previous = parse_previous(document, service="web", namespace="shop")
    assert previous is not None
    assert previous.programming_latency is None
