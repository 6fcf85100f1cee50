"""The page writer: each version of index.json keeps an ETag of its own (nginx's: mtime
second + size); the heap trimmed after large pages (glibc's malloc_trim found and called,
and a C library without one leaves the sidecar as it was, said once in the log).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
from typing import TYPE_CHECKING

import pytest
import structlog

from sidecar.metrics import Metrics
from sidecar.page import writer
from sidecar.page.document import PageData
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.render import PackagedPage, render_files
from sidecar.page.writer import DistinctVersions

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def forget_the_lookup() -> Iterator[None]:
    """Each test looks the C library's malloc_trim up afresh (it is looked up once a run)."""
    writer._malloc_trim.cache_clear()
    yield
    writer._malloc_trim.cache_clear()


def test_glibc_malloc_trim_is_found_and_runs() -> None:
    """On this machine's glibc (the image's too) malloc_trim is found through ctypes, and
    calling it answers 1 (memory released) or 0 (none to release), as glibc documents.
    """
    trim = writer._malloc_trim()
    assert trim is not None
    assert trim() in {0, 1}


def test_without_malloc_trim_nothing_is_trimmed_and_the_log_says_so_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A C library without malloc_trim (musl): the first trim looks it up, logs
    heap_trim_unavailable once, and no later one looks again or fails.
    """
    lookups: list[object] = []

    class NoTrim:
        def __init__(self, name: object) -> None:
            lookups.append(name)

    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    with structlog.testing.capture_logs() as logs:
        writer._trim_heap()
        writer._trim_heap()
    assert lookups == [None]
    assert [entry["event"] for entry in logs] == ["heap_trim_unavailable"]


def test_same_size_in_the_same_second_is_padded() -> None:
    """Two versions of equal length written within one second get different sizes, and the
    padded one still parses to the same document.
    """
    versions = DistinctVersions()
    first = b'{"addresses": ["10.0.0.2"]}\n'
    second = b'{"addresses": ["10.0.0.3"]}\n'
    assert versions.distinct(first, 100) == first
    padded = versions.distinct(second, 100)
    assert len(padded) != len(first)
    assert padded.endswith(b"\n")
    assert json.loads(padded) == json.loads(second)


def test_a_size_used_earlier_in_the_second_is_not_reused() -> None:
    """A, then B (another size), then C of A's size, all in one second: C differs from both."""
    versions = DistinctVersions()
    sizes = {len(versions.distinct(b"x" * n + b"\n", 7)) for n in (10, 11, 10, 10)}
    assert len(sizes) == 4


def test_a_new_second_starts_afresh() -> None:
    """In the next second the same size is free again: no padding grows without bound."""
    versions = DistinctVersions()
    data = b"{}\n"
    assert versions.distinct(data, 1) == data
    assert versions.distinct(data, 1) != data
    assert versions.distinct(data, 2) == data


def test_the_file_an_earlier_run_left_counts() -> None:
    """A restart within the second of the last write does not reuse that file's ETag."""
    versions = DistinctVersions()
    versions.seen(50, 3)
    assert len(versions.distinct(b"{}\n", 50)) != 3


def test_a_page_too_heavy_is_written_compact_before_it_is_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 members with names as long as the API allows: the writer sees from their weight
    that the page would pass MAX_PAGE_BYTES and renders only the compact page (every
    address, no names), never the full one, whose render would take the memory.
    """
    name = "n" * 253
    ready = tuple(
        Member(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", name, name, name)
        for i in range(20_000)
    )
    data = PageData(
        service="web",
        namespace="shop",
        membership=Membership(ready=ready, text=sum(3 * 253 + 15 for _ in ready)),
        generated_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )
    rendered: list[bool] = []

    def recording(data: PageData, *args: object) -> dict[str, bytes]:
        rendered.append(data.compact)
        return render_files(data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "render_files", recording)
    packaged = PackagedPage()
    page = writer.PageWriter(tmp_path, packaged=packaged, metrics=Metrics())
    page.write(data, packaged)
    assert rendered == [True]
    assert json.loads((tmp_path / "index.json").read_text())["compact"] is True
    assert len((tmp_path / "index.txt").read_text().split()) == 20_000
