"""A template of the user's own, rendered for the sidecar by a bounded child process.

Jinja's sandbox stops a template from reaching Python's internals, but not from spinning (a
loop that emits nothing) or from allocating hundreds of MiB (``'%0300000000d' % 1``): in the
sidecar's own process that was 331-663 MiB against its 160 Mi limit (measured:
docs/operations.md). So the template is compiled and rendered in a child (``child``) whose
CPU time and address space the kernel bounds; a template that breaks a bound fails only the
child, and the sidecar gets a TemplateError naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from sidecar.configmap.protocol import Pipe, render_request
from sidecar.page.render import TEMPLATE_NAME, TemplateError

if TYPE_CHECKING:
    from pathlib import Path

    from sidecar.page.document import PageData

log = structlog.get_logger("sidecar.templates")
# Wall-clock bound on one answer from the child, for a child that is starved of CPU rather
# than spinning (the CPU bound is the child's own, MAX_RENDER_SECONDS of CPU time).
ANSWER_TIMEOUT = 30.0
# While it waits for an answer, how often it looks whether the sidecar is stopping: a stop
# during a slow compile (seconds of CPU) ends the child at once, within the 2 s of a stop.
STOP_CHECK = 0.1


class Stopping(Exception):  # noqa: N818 - not an error: the sidecar is stopping
    """The sidecar is stopping: the child was ended before it answered."""


@dataclasses.dataclass
class _Child:
    """A running child, the pipe to it, and whether we ended it (it answered too late)."""

    process: subprocess.Popen[bytes]
    pipe: Pipe
    killed: bool = False


class IsolatedTemplate:
    """A user's template (a ``PageTemplate``) held compiled by a child process.

    The child starts at the first request and is asked over a pipe; one that broke a bound
    or died is ended, and the next request starts a new one.
    """

    def __init__(self, source: str, origin: str) -> None:
        """Nothing runs before compile() or the first render."""
        self.source, self.origin = source, origin
        self._child: _Child | None = None
        self._lock = threading.Lock()  # the publisher renders; the template watcher compiles

    def compile(self, stopping: threading.Event | None = None) -> IsolatedTemplate:
        """Compile and try it on sample data in the child; TemplateError if that fails.

        Stopping, the child ended, once ``stopping`` (the sidecar's stop event) is set.
        """
        self._ask(None, stopping)
        return self

    def render_html(self, data: PageData, fields: dict[str, Any]) -> str:
        """The page, rendered by the child."""
        html: str = self._ask(render_request(data, fields))["html"]
        return html

    def close(self) -> None:
        """End the child (it also ends by itself when its stdin closes)."""
        with self._lock:
            self._stop()

    def _ask(
        self, request: dict[str, Any] | None, stopping: threading.Event | None = None
    ) -> dict[str, Any]:
        """The answer to request (None: only compile); TemplateError for any failure.

        A child that something outside ended (a signal it did not earn) is started again
        once, not taken for the template's fault.
        """
        with self._lock:
            for attempt in range(2):
                try:
                    answer = self._exchange_all(request, stopping)
                except (OSError, EOFError, ValueError) as exc:
                    fault, reason = self._why_gone(exc)
                    self._stop()
                    if fault or attempt:
                        raise TemplateError(file=self.origin, line=None, reason=reason) from exc
                    log.warning("template_child_restarted", origin=self.origin, reason=reason)
                    continue
                error = answer.get("error")
                if isinstance(error, dict):
                    self._stop()
                    reason = str(error.get("reason"))
                    raise TemplateError(file=self.origin, line=error.get("line"), reason=reason)
                return answer
        raise AssertionError  # not reached: the second attempt returns or raises

    def _exchange_all(
        self, request: dict[str, Any] | None, stopping: threading.Event | None
    ) -> dict[str, Any]:
        """Start the child and compile if it is not running; then ask request, if any."""
        answer: dict[str, Any] = {}
        if self._child is None:
            self._child = self._start()
            compile_request = {"op": "compile", "source": self.source, "origin": self.origin}
            answer = self._exchange(compile_request, stopping)
        if request is not None and "error" not in answer:
            answer = self._exchange(request, stopping)
        return answer

    def _start(self) -> _Child:
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar.configmap.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            # Its own session: a signal to the sidecar's process group (a terminal, an init
            # that forwards signals) does not reach it.
            start_new_session=True,
        )
        assert process.stdin is not None  # noqa: S101 - asked for above
        assert process.stdout is not None  # noqa: S101
        return _Child(process, Pipe(process.stdout, process.stdin))

    def _exchange(
        self, request: dict[str, Any], stopping: threading.Event | None
    ) -> dict[str, Any]:
        child = self._child
        assert child is not None  # noqa: S101 - started by the caller
        child.pipe.send(request)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not child.pipe.answered_within(STOP_CHECK):
            if stopping is not None and stopping.is_set():
                child.process.kill()
                self._stop()
                raise Stopping
            if time.monotonic() > deadline:
                child.killed = True
                child.process.kill()
                msg = f"no answer within {ANSWER_TIMEOUT:.0f} s"
                raise ValueError(msg)
        return child.pipe.receive()

    def _why_gone(self, exc: BaseException) -> tuple[bool, str]:
        """Whether the template is to blame for the child's end, and the reason."""
        if self._child is None:
            return False, f"cannot start the template process: {exc}"
        process, killed = self._child.process, self._child.killed
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=5)
        if code == -signal.SIGXCPU:
            return True, "the render used more CPU time than its bound"
        if killed:
            return True, f"the template process did not answer within {ANSWER_TIMEOUT:.0f} s"
        if code < 0:
            return False, f"the template process was ended from outside ({signal.strsignal(-code)})"
        return True, f"the template process ended ({code}) without an answer"

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        process = child.process
        child.pipe.close()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def load_template(
    template_dir: Path, stopping: threading.Event | None = None
) -> IsolatedTemplate | None:
    """The template in template_dir, compiled; None when it holds none (the packaged page).

    Stopping when the sidecar stops (``stopping`` set) before the compile is done.
    """
    path = template_dir / TEMPLATE_NAME
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(file=str(path), line=None, reason=str(exc)) from exc
    return IsolatedTemplate(source, str(path)).compile(stopping)
