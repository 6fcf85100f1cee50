"""The atomic writer: whole files or nothing, no rewrite of identical content, temps cleaned."""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

import pytest

from sidecar.page.write import (
    WriteError,
    read_regular,
    remove_stale_temps,
    write_atomic,
    write_files,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_writes_and_replaces(tmp_path: Path) -> None:
    """A new file is created, then replaced by a new inode (rename, not in-place)."""
    target = tmp_path / "index.txt"
    assert write_atomic(target, b"a\n")
    first = target.stat().st_ino
    assert write_atomic(target, b"b\n")
    assert target.read_bytes() == b"b\n"
    assert target.stat().st_ino != first
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_identical_content_is_not_rewritten(tmp_path: Path) -> None:
    """Writing the same bytes again leaves the file (inode, mtime) untouched."""
    target = tmp_path / "index.txt"
    write_atomic(target, b"same\n")
    before = target.stat()
    assert not write_atomic(target, b"same\n")
    after = target.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    """When the rename fails, the old file stays and the temp file is removed."""
    target = tmp_path / "index.txt"
    write_atomic(target, b"old\n")
    blocker = tmp_path / "index.json"
    blocker.mkdir()  # renaming a file over a directory fails
    with pytest.raises(WriteError) as caught:
        write_atomic(blocker, b"{}")
    assert caught.value.cause.errno in {errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "index.txt"]
    assert target.read_bytes() == b"old\n"


def test_missing_folder(tmp_path: Path) -> None:
    """A missing folder raises WriteError, not a bare OSError."""
    with pytest.raises(WriteError):
        write_atomic(tmp_path / "absent" / "index.txt", b"x")


def test_stale_temps_are_removed(tmp_path: Path) -> None:
    """Temps a killed process left are removed at start; other files are kept."""
    (tmp_path / ".podlister-index.html.1a2b3c4d.tmp").write_bytes(b"half")
    (tmp_path / "index.html").write_bytes(b"whole")
    (tmp_path / ".other.tmp").write_bytes(b"not ours")
    assert remove_stale_temps(tmp_path) == [".podlister-index.html.1a2b3c4d.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp", "index.html"]


def test_write_files_reports_changed_names(tmp_path: Path) -> None:
    """write_files returns only the names whose content changed."""
    assert write_files(tmp_path, {"a": b"1", "b": b"2"}) == ["a", "b"]
    assert write_files(tmp_path, {"a": b"1", "b": b"3"}) == ["b"]


@pytest.mark.timeout(10)
def test_never_reads_through_a_link_or_a_fifo(tmp_path: Path) -> None:
    """index.txt planted as a symlink to /dev/zero or as a FIFO (someone with access to the
    folder): the unchanged-check neither reads the device forever nor blocks on the FIFO; the
    planted entry is replaced by a regular file with the content.
    """
    link, fifo = tmp_path / "index.txt", tmp_path / "index.json"
    link.symlink_to("/dev/zero")
    os.mkfifo(fifo)
    assert read_regular(link, 1 << 20) is None
    assert read_regular(fifo, 1 << 20) is None
    assert write_atomic(link, b"")
    assert write_atomic(fifo, b"{}\n")
    assert not link.is_symlink()
    assert link.read_bytes() == b""
    assert stat.S_ISREG(fifo.lstat().st_mode)


def test_read_regular_stops_at_the_limit(tmp_path: Path) -> None:
    """A regular file larger than the limit reads as None; one within it, whole."""
    target = tmp_path / "index.json"
    target.write_bytes(b"x" * 100)
    assert read_regular(target, 99) is None
    assert read_regular(target, 100) == b"x" * 100
