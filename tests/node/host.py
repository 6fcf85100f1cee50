"""What a node changes outside its namespaces, and how it is put back.

The kubelet sets three global sysctls (``vm.overcommit_memory``, ``kernel.panic``,
``kernel.panic_on_oops``) that no namespace contains, and makes cgroups under its
``cgroupRoot``. Two suites may run nodes at once: the values found before the first node
are recorded under a lock with the pids of the runs holding them, and the last run to
leave writes them back (a killed run's record is found by the next one and kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from support import verified_cache as cache

SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
RECORD = Path(tempfile.gettempdir()) / "podlister-node-sysctls.json"
CGROUPS = Path("/sys/fs/cgroup")


def read_sysctl(key: str) -> str:
    """A sysctl's value, by its path under /proc/sys."""
    return (Path("/proc/sys") / key).read_text(encoding="ascii").strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load() -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(RECORD.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return loaded


def _lock() -> Path:
    return cache.root() / ".node-sysctls.lock"


def hold_sysctls() -> dict[str, str]:
    """Record the sysctls as they are before this run's node (unless a run holds them
    already); the values that will be written back.
    """
    with cache.locked(_lock()):
        record = _load()
        values = record.get("values") or {key: read_sysctl(key) for key in SYSCTLS}
        holders = [pid for pid in record.get("holders", []) if _alive(pid)]
        holders.append(os.getpid())
        RECORD.write_text(json.dumps({"values": values, "holders": holders}), encoding="utf-8")
        return dict(values)


def release_sysctls() -> dict[str, str]:
    """Leave; the last run out writes the recorded values back. The sysctls that differed."""
    with cache.locked(_lock()):
        record = _load()
        values: dict[str, str] = record.get("values", {})
        holders = [pid for pid in record.get("holders", []) if pid != os.getpid() and _alive(pid)]
        if holders:
            RECORD.write_text(json.dumps({"values": values, "holders": holders}), encoding="utf-8")
            return {}
        changed = {
            key: read_sysctl(key) for key, value in values.items() if read_sysctl(key) != value
        }
        for key, value in values.items():
            (Path("/proc/sys") / key).write_text(value, encoding="ascii")
        RECORD.unlink(missing_ok=True)
        return changed


def cgroup_roots(name: str) -> list[Path]:
    """Where a cgroupRoot called name lives in every hierarchy (v1 controllers and v2)."""
    return [
        hierarchy / name
        for hierarchy in sorted(CGROUPS.iterdir())
        if hierarchy.is_dir() and not hierarchy.is_symlink()
    ]


def make_cgroups(name: str) -> None:
    """Create the kubelet's cgroupRoot in every hierarchy (it must exist before it starts)."""
    for root in cgroup_roots(name):
        with contextlib.suppress(OSError):
            root.mkdir(exist_ok=True)


def remove_cgroups(name: str) -> list[Path]:
    """Remove the cgroupRoot trees, deepest first, once no process is left in them; the
    folders that could not be removed.
    """
    left = []
    for root in cgroup_roots(name):
        if not root.is_dir():
            continue
        folders = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*folders, root]:
            try:
                folder.rmdir()
            except OSError:
                left.append(folder)
    return left


def container_init_pid(container_id: str) -> int:
    """The host pid of a container's first process (pid 1 in its own PID namespace),
    found by the container's ID in the cgroup path the kubelet gave it; 0 if none.
    """
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if container_id not in (proc / "cgroup").read_text(encoding="ascii"):
                continue
            status = (proc / "status").read_text(encoding="ascii")
        except OSError:
            continue
        nspids = next(line for line in status.splitlines() if line.startswith("NSpid:"))
        if nspids.split()[-1] == "1":
            return int(proc.name)
    return 0


def status_fields(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a mapping of its fields."""
    text = (Path("/proc") / str(pid) / "status").read_text(encoding="ascii")
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """A cgroup v1 setting of the process's cgroup (e.g. memory, memory.limit_in_bytes)."""
    for line in (Path("/proc") / str(pid) / "cgroup").read_text(encoding="ascii").splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return (CGROUPS / controllers / path.lstrip("/") / name).read_text().strip()
    msg = f"process {pid} is in no {controller} cgroup"
    raise LookupError(msg)


def mounts(pid: int) -> dict[str, tuple[str, str, str]]:
    """The process's mounts: mount point -> (mount options, fs type, super options)."""
    found = {}
    for line in (Path("/proc") / str(pid) / "mountinfo").read_text().splitlines():
        before, after = line.split(" - ", 1)
        fields, tail = before.split(), after.split()
        found[fields[4]] = (fields[5], tail[0], tail[2] if len(tail) > 2 else "")
    return found
