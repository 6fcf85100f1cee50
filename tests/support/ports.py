"""Loopback addresses and ports for the servers tests start, chosen per run.

Two suites (two clones, or a developer's run beside CI) may run on one machine at once:
nothing here hands out a fixed address. Ports come from the kernel; pods get a /24 of the
loopback network that this process holds a lock on for its lifetime.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import os
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

# Where the locks on claimed blocks live: one file per block, shared by every run.
CLAIMS = Path(tempfile.gettempdir()) / "podlister-loopback-claims"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@functools.cache
def pod_network() -> str:
    """The block of pod addresses ``127.A.B.`` (append 1-254) this process holds for its life.

    Picked at random outside 127.0.x.x and held by an exclusive lock on a file per block,
    so another run (which could have picked the same) moves on to another. The lock goes
    with the process, however it ends; at a normal exit the file is removed too.
    """
    _sweep()
    rng = random.Random()
    for _ in range(1000):
        prefix = f"127.{rng.randint(2, 254)}.{rng.randint(0, 255)}."
        handle = _claim(CLAIMS / f"{prefix}lock")
        if handle is not None:
            atexit.register(_release, handle)
            return prefix
    msg = f"no free block of loopback addresses after 1,000 tries (claims in {CLAIMS})"
    raise RuntimeError(msg)


def _sweep() -> None:
    """Remove the claims of runs that were killed (their lock went with them, their file not)."""
    with contextlib.suppress(FileNotFoundError):
        for path in CLAIMS.glob("*.lock"):
            handle = _claim(path)
            if handle is not None:
                _release(handle)


def _claim(path: Path) -> IO[str] | None:
    """The open, locked claim file, or None when another process holds it."""
    CLAIMS.mkdir(mode=0o1777, exist_ok=True)
    try:
        handle = path.open("a")
    except FileNotFoundError:  # the folder was removed under us: another try
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Locked, but maybe a file its holder removed (at exit) after we opened it: only the
        # file still at the path counts.
        if os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
            return handle
    except (BlockingIOError, FileNotFoundError):
        pass
    handle.close()
    return None


def _release(handle: IO[str]) -> None:
    """Remove the claim (still locked, so nobody holds the same file), and the folder when
    it is empty; then let go.
    """
    with contextlib.suppress(OSError):
        Path(handle.name).unlink()
    with contextlib.suppress(OSError):
        CLAIMS.rmdir()
    handle.close()
