"""The page template's interface, the packaged page, and the three files a render makes.

The packaged page is our code: it renders with plain Jinja (autoescape on, strict about
undefined names). A template of the user's own implements the same interface in
``sidecar.configmap``, sandboxed and bounded in a child process.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import jinja2

from sidecar.page.document import (
    HTML_FILE,
    JSON_FILE,
    TEXT_FILE,
    PageData,
    document,
    scalars,
    template_context,
    text,
)
from sidecar.page.fragments import PageRows

if TYPE_CHECKING:
    from sidecar.page.fragments import Kept
    from sidecar.page.member import Member

TEMPLATE_NAME = "index.html.j2"
# Served beside the pages: the packaged page's style and script. Files, not inline, so
# nginx's Content-Security-Policy can allow 'self' and nothing inline.
ASSET_NAMES = ("page.css", "page.js")
# The largest page: the folder (a 16 Mi emptyDir) holds each file twice while it is replaced,
# beside the others. The packaged page at 10,000 IPv6 members is ~1.0 MB.
MAX_PAGE_BYTES = MAX_PAGE_CHARS = 4 * 1024 * 1024


class TemplateError(Exception):
    """A page template does not compile or does not render; names the file and line."""

    def __init__(self, *, file: str, line: int | None, reason: str) -> None:
        """Keep where the problem is, so a log line can point at it."""
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"{file}:{line if line is not None else '?'}: {reason}")

    def fields(self) -> dict[str, object]:
        """What a log line about it names: file, line and reason."""
        return {"file": self.file, "line": self.line, "reason": self.reason}


class PageTemplate(Protocol):
    """What renders index.html: the packaged page, or a template of the user's own."""

    @property
    def origin(self) -> str:
        """Where it came from: a file's path, or ``<packaged>/...``."""

    @property
    def source(self) -> str:
        """Its text."""

    def render_html(self, data: PageData, fields: dict[str, Any]) -> str:
        """The page for data (fields: index.json's scalars); TemplateError if it cannot."""

    def close(self) -> None:
        """Release what it holds (a child process); it may be used again after."""


@functools.cache
def _packaged() -> tuple[str, jinja2.Template]:
    """The packaged template's text, compiled (once: ~7 ms)."""
    source = (resources.files(__package__) / "templates" / TEMPLATE_NAME).read_text("utf-8")
    environment = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return source, environment.from_string(source)


class PackagedPage:
    """The page that ships with the sidecar, its member and change rows kept between renders."""

    origin = f"<packaged>/{TEMPLATE_NAME}"

    def __init__(self) -> None:
        """The packaged template, no rows kept yet."""
        self.source, self._template = _packaged()
        self._rows = PageRows()

    def render_html(self, data: PageData, fields: dict[str, Any]) -> str:
        """The page."""
        html = self._template.render(template_context(data, fields, self._rows))
        self._rows.finish()
        return html

    def close(self) -> None:
        """Nothing to release."""


def render_files(
    data: PageData, page: PageTemplate, pieces: Kept[Member, tuple[str, str]]
) -> dict[str, bytes]:
    """The three files, by name; TemplateError if the page fails, is no text, or is too large.

    Too large: past MAX_PAGE_BYTES. No text: a lone surrogate a template wrote. ``pieces``:
    index.json's member pieces kept from the last render (the caller keeps one).
    """
    # Built once for the three files: at 10,000 members the address list is not free.
    fields = scalars(data)
    try:
        html = page.render_html(data, fields).encode()
    except UnicodeEncodeError as exc:
        raise TemplateError(file=page.origin, line=None, reason=f"not text: {exc}") from exc
    if len(html) > MAX_PAGE_BYTES:
        reason = f"a page of {len(html)} bytes, more than the folder takes ({MAX_PAGE_BYTES})"
        raise TemplateError(file=page.origin, line=None, reason=reason)
    json_text = document(data, fields, pieces)
    pieces.finish()
    return {JSON_FILE: json_text.encode(), TEXT_FILE: text(fields).encode(), HTML_FILE: html}


def page_assets() -> dict[str, bytes]:
    """The static files the packaged page links, by file name."""
    folder = resources.files(__package__) / "static"
    return {name: (folder / name).read_bytes() for name in ASSET_NAMES}
