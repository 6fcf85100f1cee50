"""The three files for page data, rendered as the sidecar renders them (nothing kept)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.page.fragments import Kept, member_json
from sidecar.page.render import PackagedPage, render_files

if TYPE_CHECKING:
    from sidecar.page.document import PageData
    from sidecar.page.render import PageTemplate


def files(data: PageData, page: PageTemplate | None = None) -> dict[str, bytes]:
    """index.json, index.txt and index.html from scratch: the packaged page unless given."""
    return render_files(data, page or PackagedPage(), Kept(member_json))
