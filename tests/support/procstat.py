"""What /proc says about a process: its resident memory and the CPU time its threads used."""

from __future__ import annotations

import contextlib
from pathlib import Path


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident set size in KiB (VmRSS; VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in nanosecond resolution.

    /proc/PID/stat counts 10 ms ticks: 0.5 mCPU over 30 s is 1.5 ticks, below what it can
    tell apart. schedstat's first field is each thread's time on a CPU in nanoseconds.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def tree_cpu_seconds(pid: int) -> float:
    """cpu_seconds of the process and of every process under it (a daemon started behind
    nsenter runs as its child).
    """
    total, pending = 0.0, [pid]
    while pending:
        each = pending.pop()
        with contextlib.suppress(FileNotFoundError):
            total += cpu_seconds(each)
            for task in Path(f"/proc/{each}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    return total


def processes_using(folder: Path) -> list[int]:
    """Pids of the live processes that name folder on their command line or hold a file in it
    open (nginx workers and sidecars write their logs there; neither names it in argv).
    """
    prefix = str(folder)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # A zombie has exited; only its parent's wait is missing.
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            files = [str(fd.readlink()) for fd in (entry / "fd").iterdir()]
            if prefix in argv or any(f.startswith(prefix) for f in files):
                found.append(int(entry.name))
    return found
