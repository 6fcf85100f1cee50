"""Loading a user's template: no file means the packaged page, an unreadable one names its
path, both before any child starts (the child itself: tests/integration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from sidecar.configmap.worker import load_template
from sidecar.page.render import TEMPLATE_NAME, TemplateError

if TYPE_CHECKING:
    from pathlib import Path


def test_a_folder_without_the_template_gives_the_packaged_page(tmp_path: Path) -> None:
    """No index.html.j2 in the folder: None, and the publisher renders the packaged page."""
    assert load_template(tmp_path) is None


def test_a_file_that_cannot_be_read_names_it(tmp_path: Path) -> None:
    """A template that is not UTF-8 fails at load with its path, before any child starts."""
    (tmp_path / TEMPLATE_NAME).write_bytes(b"\xff\xfe<p>")
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_path)
    assert caught.value.file == str(tmp_path / TEMPLATE_NAME)
