"""Each version of index.json keeps an ETag of its own (nginx's: mtime second + size)."""

from __future__ import annotations

import json

from sidecar.page.etag import DistinctVersions


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
