"""Atomic file output: readers see the old file or the new one, never part of one."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

# Temp files are hidden (nginx does not serve dot files by name in our config) and marked
# so a restart can find the ones a killed process left behind.
TEMP_PREFIX = ".podlister-"
TEMP_SUFFIX = ".tmp"
FILE_MODE = 0o644  # nginx runs as another user in the pod and must read the pages


class WriteError(Exception):
    """A file could not be replaced; the old file is still in place."""

    def __init__(self, path: Path, cause: OSError) -> None:
        """Name the file and keep the OS error (errno tells full disk from permissions)."""
        self.path, self.cause = path, cause
        super().__init__(f"cannot write {path}: {cause.strerror or cause}")


def remove_stale_temps(directory: Path) -> list[str]:
    """Delete temp files left by an earlier process that was killed mid-write."""
    removed = []
    for entry in directory.iterdir():
        name = entry.name
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(name)
    return removed


def read_regular(path: Path, limit: int) -> bytes | None:
    """The content of path if it is a regular file of at most limit bytes, else None.

    The folder is shared with nginx and may be tampered with: never follow a symlink
    (``/dev/zero`` would be read forever), never block on a FIFO, never read past the limit.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _unchanged(path: Path, data: bytes) -> bool:
    return read_regular(path, len(data)) == data


def write_atomic(path: Path, data: bytes, *, mtime_ns: int | None = None) -> bool:
    """Replace path with data unless it already holds exactly that; True when written.

    No fsync: an emptyDir does not outlive the pod; the rename alone makes the swap atomic.
    ``mtime_ns``: the modification time (nginx's Last-Modified, half its ETag) to set.
    """
    if _unchanged(path, data):
        return False
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # umask may have narrowed the mode given to open
            os.fchmod(fd, FILE_MODE)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        temp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise WriteError(path, exc) from exc
    return True


def write_files(
    directory: Path, files: Mapping[str, bytes], *, mtime_ns: int | None = None
) -> list[str]:
    """Write each file atomically, in the order given; the names of those that changed."""
    return [
        name
        for name, data in files.items()
        if write_atomic(directory / name, data, mtime_ns=mtime_ns)
    ]
