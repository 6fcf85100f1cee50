"""Templates: Jinja's immutable sandbox with hard bounds, the packaged page, a ConfigMap's.

A ConfigMap's template is compiled and rendered in a child process with CPU and memory
limits (``template_process``); the packaged page renders in this process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
import time
import traceback
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sidecar.document import PageData, template_context
from sidecar.history import Change
from sidecar.membership import Member, Membership
from sidecar.template_process import TemplateWorker, WorkerFailedError, render_request

if TYPE_CHECKING:
    from pathlib import Path

    from sidecar.fragments import Fragments

TEMPLATE_NAME = "index.html.j2"
# What one render of a (possibly hostile) ConfigMap template may cost (seconds of CPU).
# The packaged page at 10,000 IPv6 members is ~1.0 MB and takes ~20 ms; these bounds leave
# room for rich pages while keeping the emptyDir (16 Mi) and the publisher thread safe from
# a runaway loop.
MAX_RENDER_CHARS = 4 * 1024 * 1024
MAX_RENDER_SECONDS = 3.0
# The render's CPU clock is read on every this many deadline checks (see check_deadline).
CLOCK_EVERY = 32
MAX_EXPONENT = 1024


class TemplateError(Exception):
    """A page template does not compile or does not render; names the file and line."""

    def __init__(self, *, file: str, line: int | None, reason: str) -> None:
        """Keep where the problem is, so a log line can point at it."""
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"{file}:{line if line is not None else '?'}: {reason}")

    def fields(self) -> dict[str, object]:
        """What a log line about it names: file, line and reason."""
        return {"file": self.file, "line": self.line, "reason": self.reason}


class Template(Protocol):
    """A page template: the packaged one in-process, or a ConfigMap's in a bounded child."""

    @property
    def origin(self) -> str:
        """Where it came from: a file's path, or ``<packaged>/...``."""

    @property
    def source(self) -> str:
        """Its text."""

    def render_page(self, data: PageData, scalars: dict[str, Any], fragments: Fragments) -> str:
        """The HTML page; TemplateError naming file and line when it cannot be rendered."""

    def close(self) -> None:
        """Release what the template holds (a child process); it may be used again after."""


@dataclasses.dataclass(frozen=True, slots=True)
class PageTemplate:
    """A compiled template and where it came from, rendered in this process."""

    template: jinja2.Template
    origin: str
    source: str

    def render_page(self, data: PageData, scalars: dict[str, Any], fragments: Fragments) -> str:
        """The HTML page from the template's variables for data."""
        return self.render(template_context(data, scalars, fragments))

    def close(self) -> None:
        """Nothing to release."""

    def render(self, context: dict[str, Any]) -> str:
        """Render within the sandbox's bounds; raise TemplateError naming file and line."""
        environment = self.template.environment
        assert isinstance(environment, _Sandbox)  # noqa: S101 - only compile_template makes these
        try:
            return environment.render_bounded(self.template, context)
        except Exception as exc:
            raise TemplateError(
                file=self.origin, line=_line_in(exc, self.origin), reason=_reason(exc)
            ) from exc


class RenderLimitError(Exception):
    """A render went past MAX_RENDER_CHARS or MAX_RENDER_SECONDS."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox: no dunder or internal attributes, no mutation of data.

    A template comes from a ConfigMap, and the sidecar holds the ServiceAccount token and
    writes the served folder: ``{{ cycler.__init__.__globals__.os }}`` must fail, not run.
    Every call a template makes also checks the render's deadline, so loops that print
    nothing (``range`` nested in ``range``) are bounded too.
    """

    def __init__(self) -> None:
        # Autoescape is off by default in Jinja2; every field of a slice is untrusted.
        super().__init__(
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._deadline = threading.local()

    def call(
        self,
        context: jinja2.runtime.Context,
        obj: Any,  # noqa: ANN401 - any callable a template reaches
        /,
        *args: Any,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        """Check the deadline, then call as the sandbox allows."""
        self.check_deadline()
        return super().call(context, obj, *args, **kwargs)

    # Operators that can allocate without bound in one step: 'x' * 10**9.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self,
        context: jinja2.runtime.Context,
        operator: str,
        left: Any,  # noqa: ANN401 - any operand a template writes
        right: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        """Refuse a repetition longer than a page may be, or a power with a huge exponent."""
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                sized = isinstance(sequence, str | list | tuple) and isinstance(count, int)
                if sized and len(sequence) * count > MAX_RENDER_CHARS:
                    raise RenderLimitError("repetition larger than a page may be")
        elif isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise RenderLimitError(f"exponent larger than {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)

    def check_deadline(self) -> None:
        """Raise RenderLimitError once this thread's render has run out of time.

        The clock is read on every CLOCK_EVERY-th check only: reading a thread's CPU time is
        a system call, and a page makes hundreds of checks (every output piece and call);
        the bound moves by at most CLOCK_EVERY steps of a template, microseconds each.
        """
        state = self._deadline
        if getattr(state, "at", None) is None:
            return
        state.ticks += 1
        if state.ticks % CLOCK_EVERY == 0 and time.thread_time() > state.at:
            raise RenderLimitError(f"render took more than {MAX_RENDER_SECONDS} s of CPU")

    def render_bounded(self, template: jinja2.Template, context: dict[str, Any]) -> str:
        """Render chunk by chunk, stopping at the size or time bound."""
        # CPU time of this thread, not wall time: a sidecar starved by its CPU limit or a
        # busy node must still render the packaged page at 10,000 members (measured: it
        # missed a 3 s wall-clock deadline beside two CPU hogs at nice 19).
        self._deadline.at = time.thread_time() + MAX_RENDER_SECONDS
        self._deadline.ticks = 0
        parts: list[str] = []
        size = 0
        try:
            for part in template.generate(context):
                size += len(part)
                if size > MAX_RENDER_CHARS:
                    raise RenderLimitError(f"page larger than {MAX_RENDER_CHARS} characters")
                self.check_deadline()
                parts.append(part)
        finally:
            self._deadline.at = None
        return "".join(parts)


def _environment() -> _Sandbox:
    return _Sandbox()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "the render needed more memory than its bound"
    if isinstance(exc, SecurityError):
        return f"not allowed in the sandbox: {exc}"
    return str(exc) or type(exc).__name__


def _line_in(exc: BaseException, filename: str) -> int | None:
    """The template line an error was raised from: Jinja maps its frames back to the template."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    return lines[-1] if lines else None


def _sample_data() -> PageData:
    """Data that walks every loop of a template, so an undefined name fails at load, not later."""
    moment = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    member = Member(address="192.0.2.1", pod="pod-a", node="node-a", zone="zone-a")
    other = Member(address="2001:db8::1", pod="pod-b", node="node-b", zone="zone-b")
    return PageData(
        service="sample",
        namespace="sample",
        membership=Membership(ready=(member,), terminating=(other,), not_ready=(other,)),
        generated_at=moment,
        pod_name="pod-a",
        pod_ip="192.0.2.1",
        changes=(
            Change(
                at=moment,
                added=("192.0.2.1",),
                removed=("192.0.2.2",),
                added_count=1,
                removed_count=1,
            ),
        ),
        stale_since=moment,
    )


def compile_template(source: str, origin: str) -> PageTemplate:
    """Compile a template and render it once on sample data; raise TemplateError on failure."""
    env = _environment()
    try:
        code = env.compile(source, name=TEMPLATE_NAME, filename=origin)
        template = env.template_class.from_code(env, code, env.make_globals(None))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(file=origin, line=exc.lineno, reason=exc.message or str(exc)) from exc
    except Exception as exc:
        raise TemplateError(file=origin, line=_line_in(exc, origin), reason=_reason(exc)) from exc
    page = PageTemplate(template=template, origin=origin, source=source)
    page.render(template_context(_sample_data()))
    return page


@functools.cache
def packaged_template() -> PageTemplate:
    """The page that ships with the sidecar: compiled once, the same object everywhere.

    One object, so that the publisher can tell its fallback from the template it renders
    with (by identity), and start-up does not compile it twice.
    """
    resource = resources.files("sidecar") / "templates" / TEMPLATE_NAME
    return compile_template(resource.read_text(encoding="utf-8"), f"<packaged>/{TEMPLATE_NAME}")


class IsolatedPageTemplate:
    """A template from outside, compiled and rendered in a bounded child process."""

    def __init__(self, source: str, origin: str) -> None:
        """Nothing runs before compile() or the first render."""
        self.source, self.origin = source, origin
        self._worker = TemplateWorker(source, origin)

    def compile(self) -> IsolatedPageTemplate:
        """Compile and try it on sample data in the child; TemplateError if that fails."""
        self._answer(None)
        return self

    def render_page(self, data: PageData, scalars: dict[str, Any], fragments: Fragments) -> str:
        """The HTML page, rendered by the child (the fragments stay with the child)."""
        del fragments  # the child keeps its own
        html: str = self._answer(render_request(data, scalars))["html"]
        return html

    def close(self) -> None:
        """End the child process."""
        self._worker.close()

    def _answer(self, request: dict[str, Any] | None) -> dict[str, Any]:
        try:
            answer = self._worker.ask(request)
        except WorkerFailedError as exc:
            self._worker.close()
            raise TemplateError(file=self.origin, line=None, reason=str(exc)) from exc
        error = answer.get("error")
        if isinstance(error, dict):
            self._worker.close()
            raise TemplateError(
                file=self.origin, line=error.get("line"), reason=str(error.get("reason"))
            )
        return answer


def load_template(template_dir: Path | None) -> Template:
    """The override in template_dir when it has one, else the packaged page."""
    if template_dir is None:
        return packaged_template()
    path = template_dir / TEMPLATE_NAME
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return packaged_template()
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(file=str(path), line=None, reason=str(exc)) from exc
    return IsolatedPageTemplate(source, str(path)).compile()
