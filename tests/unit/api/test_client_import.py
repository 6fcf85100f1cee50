"""The light import's checks, on packages made in a temporary folder (no client imported)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import pytest

from sidecar.api.client_import import LAID_OUT_FOR, LayoutError, declared_version

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType


def package(tmp_path: Path, init: str) -> ModuleType:
    """A package module whose __init__ holds init, not run."""
    folder = tmp_path / "kubernetes"
    folder.mkdir()
    (folder / "__init__.py").write_text(init, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("kubernetes", folder / "__init__.py")
    assert spec is not None
    return importlib.util.module_from_spec(spec)


@pytest.mark.parametrize(
    ("version", "light"),
    [("37.0.2", True), ("37.0.3", True), ("37.1.0", True), ("38.0.0", False), ("36.0.0", False)],
)
def test_every_37_release_takes_the_light_import(
    tmp_path: Path, version: str, *, light: bool
) -> None:
    """The version is read from the package's __init__ without running it; any 37.x release
    is laid out as expected (the layout did not change within 37), any other is not.
    """
    found = declared_version(package(tmp_path, f'"""Client."""\n__version__ = "{version}"\n'))
    assert found == version
    assert found.startswith(LAID_OUT_FOR) is light


def test_a_package_that_declares_no_version_is_a_layout_error(tmp_path: Path) -> None:
    """Without a __version__ line, the light import refuses (and the whole client is used)."""
    with pytest.raises(LayoutError, match="declares no __version__"):
        declared_version(package(tmp_path, "import os\n"))
