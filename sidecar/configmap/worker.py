"""A template of the user's own, rendered for the sidecar by a bounded child process.

Jinja's sandbox stops a template from reaching Python's internals, but not from spinning (a
loop that emits nothing) or from allocating hundreds of MiB (``'%0300000000d' % 1``): in the
sidecar's own process that was 331-663 MiB against its 160 Mi limit (measured:
docs/operations.md). So the template is compiled and rendered in a child (``child``) whose
CPU time and address space the kernel bounds; a template that breaks a bound fails only the
child, and the sidecar gets a TemplateError naming the file.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

from sidecar.configmap.protocol import read_frame, render_request, write_frame
from sidecar.page.render import TEMPLATE_NAME, TemplateError

if TYPE_CHECKING:
    from pathlib import Path

    from sidecar.page.document import PageData

# Wall-clock bound on one answer from the child, for a child that is starved of CPU rather
# than spinning (the CPU bound is the child's own, MAX_RENDER_SECONDS of CPU time).
ANSWER_TIMEOUT = 30.0


class WorkerFailedError(Exception):
    """The child did not answer: it broke a bound (and was killed) or could not start."""


class TemplateWorker:
    """A child process holding one compiled template; asked over a pipe."""

    def __init__(self, source: str, origin: str) -> None:
        """Nothing starts before the first request."""
        self.source, self.origin = source, origin
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # the publisher renders; the template watcher compiles

    def ask(self, request: dict[str, Any] | None) -> dict[str, Any]:
        """Send one request; start the child and compile the template first if needed.

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
                [sys.executable, "-m", "sidecar.configmap.child"],
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
            write_frame(process.stdin, request)  # type: ignore[arg-type]
        except OSError as exc:
            raise WorkerFailedError(self._why_gone(process)) from exc
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(ANSWER_TIMEOUT):
                process.kill()
                msg = f"no answer from the template process within {ANSWER_TIMEOUT:.0f} s"
                raise WorkerFailedError(msg)
        try:
            return read_frame(process.stdout)  # type: ignore[arg-type]
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


class IsolatedTemplate:
    """A page template of the user's own (``PageTemplate``), rendered by a TemplateWorker."""

    def __init__(self, source: str, origin: str) -> None:
        """Nothing runs before compile() or the first render."""
        self.source, self.origin = source, origin
        self._worker = TemplateWorker(source, origin)

    def compile(self) -> IsolatedTemplate:
        """Compile and try it on sample data in the child; TemplateError if that fails."""
        self._answer(None)
        return self

    def render_html(self, data: PageData, fields: dict[str, Any]) -> str:
        """The page, rendered by the child."""
        html: str = self._answer(render_request(data, fields))["html"]
        return html

    def close(self) -> None:
        """End the child process."""
        self._worker.close()

    def _answer(self, request: dict[str, Any] | None) -> dict[str, Any]:
        try:
            answer = self._worker.ask(request)
        except WorkerFailedError as exc:
            raise TemplateError(file=self.origin, line=None, reason=str(exc)) from exc
        error = answer.get("error")
        if isinstance(error, dict):
            self._worker.close()
            raise TemplateError(
                file=self.origin, line=error.get("line"), reason=str(error.get("reason"))
            )
        return answer


def load_template(template_dir: Path) -> IsolatedTemplate | None:
    """The template in template_dir, compiled; None when it holds none (the packaged page)."""
    path = template_dir / TEMPLATE_NAME
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(file=str(path), line=None, reason=str(exc)) from exc
    return IsolatedTemplate(source, str(path)).compile()
