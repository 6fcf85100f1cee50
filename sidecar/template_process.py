"""Templates from a ConfigMap, rendered in a child process with hard CPU and memory limits.

Jinja's sandbox stops a template from reaching Python's internals, but not from spinning
(a loop that emits nothing never meets a deadline checked between output pieces) or from
allocating hundreds of MiB (``'%0300000000d' % 1``). So a template that comes from outside
is compiled and rendered in a child interpreter whose address space (RLIMIT_AS) and CPU time
(RLIMIT_CPU, raised before each render to what it used plus the bound) the kernel enforces.
A template that breaks a bound kills or fails only the child: the sidecar gets a
TemplateError naming the file, and its threads, probes and publisher carry on.

The packaged page is ours: it keeps the fast in-process path (``render.PageTemplate``).

Protocol on the child's stdin and stdout: frames of a 4-byte length and a JSON object.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import resource
import selectors
import signal
import struct
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, BinaryIO

from sidecar.membership import Member, Membership

if TYPE_CHECKING:
    from sidecar.document import PageData
    from sidecar.fragments import Fragments

# The child's whole address space: ~26 MiB after its imports, so ~70 MiB for a render; the
# sidecar container's memory limit (160 Mi) holds the sidecar and a child at this bound.
MEMORY_LIMIT = 96 * 1024 * 1024
# Wall-clock bound on one answer from the child, for a child that is starved of CPU rather
# than spinning (the CPU bound is MAX_RENDER_SECONDS of its own CPU time, set by the child).
ANSWER_TIMEOUT = 30.0
_HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a request of a 10,000-member page is a few MB


class WorkerFailedError(Exception):
    """The child did not answer: it broke a bound (and was killed) or could not start."""


def _write_frame(stream: BinaryIO, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, ensure_ascii=False).encode()
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_frame(stream: BinaryIO) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
    if size > MAX_FRAME:
        msg = f"frame of {size} bytes"
        raise ValueError(msg)
    answer: dict[str, Any] = json.loads(_read_exactly(stream, size))
    return answer


def _members(members: tuple[Member, ...]) -> list[list[str]]:
    return [[m.address, m.pod, m.node, m.zone] for m in members]


def render_request(data: PageData, scalars: dict[str, Any]) -> dict[str, Any]:
    """What the child needs to build the template's variables: JSON-ready."""
    return {
        "op": "render",
        "scalars": scalars,
        "pod_ip": data.pod_ip,
        "members": _members(data.membership.ready),
        "terminating": _members(data.membership.terminating),
        "not_ready": _members(data.membership.not_ready),
    }


class TemplateWorker:
    """A child process holding one compiled ConfigMap template; asked over a pipe."""

    def __init__(self, source: str, origin: str) -> None:
        """Nothing starts before the first compile or render."""
        self.source, self.origin = source, origin
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # the publisher renders; the watcher compiles

    def ask(self, request: dict[str, Any] | None) -> dict[str, Any]:
        """Send one request to the child; start it and compile the template first if needed.

        None asks for only that. The answer holds ``error`` (file, line, reason) when the
        template failed in the sandbox; WorkerFailedError when the child broke a bound or
        died (it is then ended, and the next request starts a new one).
        """
        with self._lock:
            try:
                if self._process is None:
                    self._process = self._start()
                    compiled = self._exchange(
                        {"op": "compile", "source": self.source, "origin": self.origin}
                    )
                    if "error" in compiled or request is None:
                        return compiled
                if request is None:
                    return {"ok": True}
                return self._exchange(request)
            except WorkerFailedError:
                self._stop_process()
                raise

    def close(self) -> None:
        """End the child (it also ends by itself when our end of its stdin closes)."""
        with self._lock:
            self._stop_process()

    def _start(self) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "sidecar.template_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
        except OSError as exc:
            msg = f"cannot start the template process: {exc}"
            raise WorkerFailedError(msg) from exc

    def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        assert process is not None  # noqa: S101 - started by the caller
        assert process.stdin is not None  # noqa: S101
        assert process.stdout is not None  # noqa: S101
        try:
            _write_frame(process.stdin, request)  # type: ignore[arg-type]
        except OSError as exc:
            raise WorkerFailedError(self._why_gone(process)) from exc
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(ANSWER_TIMEOUT):
                process.kill()
                msg = f"no answer from the template process within {ANSWER_TIMEOUT:.0f} s"
                raise WorkerFailedError(msg)
        try:
            return _read_frame(process.stdout)  # type: ignore[arg-type]
        except (EOFError, ValueError, OSError) as exc:
            raise WorkerFailedError(self._why_gone(process)) from exc

    @staticmethod
    def _why_gone(process: subprocess.Popen[bytes]) -> str:
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=5)
        if code == -signal.SIGXCPU:
            return "the render used more CPU time than its bound"
        if code == -signal.SIGKILL:
            return "the template process was killed (memory or time)"
        return f"the template process ended ({code}) without an answer"

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


# ---- the child ------------------------------------------------------------------------


def _limit_cpu(seconds: float) -> None:
    """Let this process use `seconds` more CPU time from now; SIGXCPU ends it after that."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _member_tuple(rows: list[list[str]]) -> tuple[Member, ...]:
    return tuple(Member(*row) for row in rows)


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    # Imported here: the parent imports this module only for IsolatedTemplate.
    from sidecar.document import PageData, template_context  # noqa: PLC0415
    from sidecar.fragments import Fragments  # noqa: PLC0415
    from sidecar.sandbox import (  # noqa: PLC0415
        MAX_RENDER_SECONDS,
        PageTemplate,
        TemplateError,
        compile_template,
    )

    template: PageTemplate | None = None
    fragments: Fragments = Fragments()
    while True:
        try:
            request = _read_frame(stdin)
        except EOFError:
            return
        _limit_cpu(MAX_RENDER_SECONDS)
        try:
            if request["op"] == "compile":
                template = compile_template(request["source"], request["origin"])
                _write_frame(stdout, {"ok": True})
                continue
            assert template is not None  # noqa: S101 - the parent compiles first
            data = PageData(
                service=request["scalars"]["service"],
                namespace=request["scalars"]["namespace"],
                membership=Membership(
                    ready=_member_tuple(request["members"]),
                    terminating=_member_tuple(request["terminating"]),
                    not_ready=_member_tuple(request["not_ready"]),
                ),
                generated_at=dt.datetime.now(dt.UTC),
                pod_ip=request["pod_ip"],
            )
            html = template.render(template_context(data, request["scalars"], fragments))
            fragments.finish()
            _write_frame(stdout, {"html": html})
        except TemplateError as exc:
            _write_frame(stdout, {"error": exc.fields()})
        except MemoryError:
            reason = f"the render needed more than {MEMORY_LIMIT >> 20} MiB"
            _write_frame(stdout, {"error": {"line": None, "reason": reason}})


def main() -> None:
    """Child: bound memory, let signals through again, and serve requests until EOF."""
    # The sidecar blocks SIGTERM and friends in all its threads, and a child inherits that.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
