"""A template of the user's own, compiled and rendered in Jinja's immutable sandbox.

Runs in the template child only (``child``): the sandbox stops a template from reaching
Python's internals or mutating the data, and bounds what one operation or one page may
allocate; the child's kernel limits bound the rest (CPU time, address space).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import traceback
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sidecar.page.document import PageData, scalars, template_context
from sidecar.page.fragments import PageRows
from sidecar.page.history import Change
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.render import MAX_PAGE_BYTES, MAX_PAGE_CHARS, TEMPLATE_NAME, TemplateError

MAX_EXPONENT = 1024


class RenderLimitError(Exception):
    """A render went past what a page may hold (or wrote no text), or one operation did."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox: no dunder or internal attributes, no mutation of data.

    A template comes from a ConfigMap, and the sidecar holds the ServiceAccount token and
    writes the served folder: ``{{ cycler.__init__.__globals__.os }}`` must fail, not run.
    """

    def __init__(self) -> None:
        # Autoescape is off by default in Jinja2; every field of a slice is untrusted.
        super().__init__(
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )

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
                if sized and len(sequence) * count > MAX_PAGE_CHARS:
                    raise RenderLimitError("repetition larger than a page may be")
        elif isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise RenderLimitError(f"exponent larger than {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxedTemplate:
    """A compiled template, where it came from, and its rows kept between renders."""

    template: jinja2.Template
    origin: str
    rows: PageRows = dataclasses.field(default_factory=PageRows)

    def render_html(self, data: PageData, fields: dict[str, Any]) -> str:
        """The page, piece by piece up to MAX_PAGE_BYTES; TemplateError naming file and line."""
        context = template_context(data, fields, self.rows)
        try:
            html = _bounded(self.template, context)
        except Exception as exc:
            raise TemplateError(
                file=self.origin, line=_line_in(exc, self.origin), reason=_reason(exc)
            ) from exc
        self.rows.finish()
        return html


def _bounded(template: jinja2.Template, context: dict[str, Any]) -> str:
    """The rendered page; RenderLimitError as soon as its UTF-8 is past MAX_PAGE_BYTES.

    Bytes, not characters: the folder holds bytes, and "€" is three of them. Counted here,
    in the child, so that a page too large never crosses the pipe (as JSON, 6 bytes each).
    """
    parts: list[str] = []
    size = 0
    for part in template.generate(context):
        try:
            size += len(part) if part.isascii() else len(part.encode())
        except UnicodeEncodeError as exc:  # a lone surrogate: no file can hold it
            raise RenderLimitError(f"not text: {exc}") from exc
        if size > MAX_PAGE_BYTES:
            reason = f"a page of more than {MAX_PAGE_BYTES} bytes, more than the folder takes"
            raise RenderLimitError(reason)
        parts.append(part)
    return "".join(parts)


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


def sample_data() -> PageData:
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


def compile_template(source: str, origin: str) -> SandboxedTemplate:
    """Compile a template and render it once on sample data; TemplateError if either fails."""
    environment = _Sandbox()
    try:
        code = environment.compile(source, name=TEMPLATE_NAME, filename=origin)
        template = environment.template_class.from_code(
            environment, code, environment.make_globals(None)
        )
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(file=origin, line=exc.lineno, reason=exc.message or str(exc)) from exc
    except Exception as exc:
        raise TemplateError(file=origin, line=_line_in(exc, origin), reason=_reason(exc)) from exc
    compiled = SandboxedTemplate(template=template, origin=origin)
    sample = sample_data()
    compiled.render_html(sample, scalars(sample))
    return compiled
