"""Pure rendering: a membership snapshot in, the bytes of index.json, .txt and .html out."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from sidecar.document import HTML_FILE, JSON_FILE, TEXT_FILE, PageData, document, scalars
from sidecar.fragments import Fragments

if TYPE_CHECKING:
    from sidecar.sandbox import Template

# Served beside the pages: the packaged page's style and script. Files, not inline, so
# nginx's Content-Security-Policy can allow 'self' and nothing inline.
ASSET_NAMES = ("page.css", "page.js")


def page_assets() -> dict[str, bytes]:
    """The static files the packaged page links, by file name."""
    folder = resources.files("sidecar") / "static"
    return {name: (folder / name).read_bytes() for name in ASSET_NAMES}


def render_files(
    data: PageData, page: Template, fragments: Fragments | None = None
) -> dict[str, bytes]:
    """The three outputs, by file name; raise TemplateError if the HTML fails to render.

    ``fragments``: the pieces of the previous render to reuse (the publisher keeps one);
    without it everything is built afresh, with the same result.
    """
    pieces = fragments if fragments is not None else Fragments()
    # Built once for all three files: at 10,000 members the address list is not free.
    fields = scalars(data)
    html = page.render_page(data, fields, pieces)
    json_text = document(data, fields, pieces)
    pieces.finish()
    return {
        JSON_FILE: json_text.encode(),
        TEXT_FILE: "".join(f"{address}\n" for address in fields["addresses"]).encode(),
        HTML_FILE: html.encode(),
    }
