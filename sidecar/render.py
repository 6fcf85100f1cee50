"""Pure rendering: a membership snapshot in, the bytes of index.json, .txt and .html out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import threading
import time
import traceback
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sidecar.fragments import Fragments, member_fields
from sidecar.history import Change
from sidecar.kinds import Source
from sidecar.membership import Member, Membership
from sidecar.template_process import TemplateWorker, WorkerFailedError, render_request

if TYPE_CHECKING:
    from pathlib import Path

TEMPLATE_NAME = "index.html.j2"
OUTPUT_NAMES = ("index.json", "index.txt", "index.html")
# Served beside the pages: the packaged page's style and script. Files, not inline, so
# nginx's Content-Security-Policy can allow 'self' and nothing inline.
ASSET_NAMES = ("page.css", "page.js")
# What one render of a (possibly hostile) ConfigMap template may cost (seconds of CPU).
# The packaged page at 10,000 IPv6 members is ~1.0 MB and takes ~20 ms; these bounds leave
# room for rich pages while keeping the emptyDir (16 Mi) and the publisher thread safe from
# a runaway loop.
MAX_RENDER_CHARS = 4 * 1024 * 1024
MAX_RENDER_SECONDS = 3.0
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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PageData:
    """Everything a page shows; built by the publisher, rendered here."""

    service: str
    namespace: str
    membership: Membership
    generated_at: dt.datetime
    pod_name: str = ""
    pod_ip: str = ""
    source: Source = Source.ENDPOINT_SLICES
    changes: tuple[Change, ...] = ()
    stale_since: dt.datetime | None = None
    """Set while the API cannot be reached: since when the list may be out of date."""
    compact: bool = False
    """The folder is too small for the full page: members without detail, no history."""

    def compacted(self) -> PageData:
        """The same list of addresses, without pod and node names and without history."""
        return dataclasses.replace(
            self,
            membership=Membership(ready=tuple(Member(m.address) for m in self.membership.ready)),
            changes=(),
            compact=True,
        )


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


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _members(members: tuple[Member, ...]) -> list[dict[str, str]]:
    return [member_fields(m) for m in members]


def _scalars(data: PageData) -> dict[str, Any]:
    return {
        "service": data.service,
        "namespace": data.namespace,
        "addresses": list(data.membership.addresses),
        "served_by": {"pod_name": data.pod_name, "pod_ip": data.pod_ip},
        "generated_at": _timestamp(data.generated_at),
        "source": data.source,
        "stale_since": _timestamp(data.stale_since) if data.stale_since else None,
        "compact": data.compact,
        "changes": [
            {
                "at": _timestamp(c.at),
                "added": list(c.added),
                "removed": list(c.removed),
                "added_count": c.added_count,
                "removed_count": c.removed_count,
            }
            for c in data.changes
        ],
    }


def page_context(data: PageData, scalars: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document index.json holds, as one dict: its definition.

    render_files assembles the same bytes from cached pieces (_document); the tests hold
    the two equal.
    """
    return {
        **(scalars or _scalars(data)),
        "members": _members(data.membership.ready),
        "terminating": _members(data.membership.terminating),
        "not_ready": _members(data.membership.not_ready),
    }


def template_context(
    data: PageData, scalars: dict[str, Any] | None = None, fragments: Fragments | None = None
) -> dict[str, Any]:
    """The template's variables: the same names and fields as index.json, and member_rows.

    Members stay Member objects here: Jinja resolves ``member.address`` with getattr
    first, so on a dict every lookup raises and catches an AttributeError, which made
    rendering 1,000 members cost several milliseconds more. ``member_rows(members)`` gives
    the packaged page's <li> rows, cached per member (sidecar/fragments.py).
    """
    pieces = fragments if fragments is not None else Fragments()
    self_ip = data.pod_ip
    return {
        **(scalars or _scalars(data)),
        "members": data.membership.ready,
        "terminating": data.membership.terminating,
        "not_ready": data.membership.not_ready,
        "member_rows": lambda members: pieces.rows(members, self_ip),
    }


def _document(data: PageData, scalars: dict[str, Any], fragments: Fragments) -> str:
    """index.json, byte for byte what json.dumps(page_context(data)) gives, from cached pieces.

    No indent: json.dumps then uses its C encoder for the scalar part too.
    """
    members, addresses = fragments.members_json(data.membership.ready)
    lists = {
        "addresses": addresses,
        "members": members,
        "terminating": fragments.members_json(data.membership.terminating)[0],
        "not_ready": fragments.members_json(data.membership.not_ready)[0],
    }
    parts = []
    for key in (*scalars, "members", "terminating", "not_ready"):
        value = lists.get(key)
        if value is None:
            value = json.dumps(scalars[key], ensure_ascii=False)
        parts.append(f'"{key}": {value}')
    return "{" + ", ".join(parts) + "}\n"


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
        """Raise RenderLimitError once this thread's render has run out of time."""
        deadline = getattr(self._deadline, "at", None)
        if deadline is not None and time.thread_time() > deadline:
            raise RenderLimitError(f"render took more than {MAX_RENDER_SECONDS} s of CPU")

    def render_bounded(self, template: jinja2.Template, context: dict[str, Any]) -> str:
        """Render chunk by chunk, stopping at the size or time bound."""
        # CPU time of this thread, not wall time: a sidecar starved by its CPU limit or a
        # busy node must still render the packaged page at 10,000 members (measured: it
        # missed a 3 s wall-clock deadline beside two CPU hogs at nice 19).
        self._deadline.at = time.thread_time() + MAX_RENDER_SECONDS
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


def page_assets() -> dict[str, bytes]:
    """The static files the packaged page links, by file name."""
    folder = resources.files("sidecar") / "static"
    return {name: (folder / name).read_bytes() for name in ASSET_NAMES}


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


def render_files(
    data: PageData, page: Template, fragments: Fragments | None = None
) -> dict[str, bytes]:
    """The three outputs, by file name; raise TemplateError if the HTML fails to render.

    ``fragments``: the pieces of the previous render to reuse (the publisher keeps one);
    without it everything is built afresh, with the same result.
    """
    pieces = fragments if fragments is not None else Fragments()
    # Built once for all three files: at 10,000 members the address list is not free.
    scalars = _scalars(data)
    html = page.render_page(data, scalars, pieces)
    document = _document(data, scalars, pieces)
    pieces.finish()
    return {
        "index.json": document.encode(),
        "index.txt": "".join(f"{address}\n" for address in scalars["addresses"]).encode(),
        "index.html": html.encode(),
    }
