"""The README's layout says what the package holds: every module, with its docstring's line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- modules:[^>]*-->\n(.*?)<!-- /modules -->", re.DOTALL)


def expected_lines() -> list[str]:
    """One line per module of sidecar/: its name and the first line of its docstring."""
    lines = []
    for path in sorted((REPO / "sidecar").glob("*.py")):
        if path.name.startswith("__"):
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring, f"{path.name} has no module docstring"
        lines.append(f"- `{path.stem}`: {docstring.strip().splitlines()[0].rstrip()}")
    return lines


def test_layout_lists_every_module_with_its_line() -> None:
    """The Layout section's module list is exactly sidecar/'s modules, each with the first
    line of its docstring (a module added, renamed or redescribed fails here until the README
    says so; the message holds the list to paste).
    """
    found = BLOCK.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md has no <!-- modules: --> block in its Layout section"
    expected = expected_lines()
    assert found.group(1).splitlines() == expected, "\n" + "\n".join(expected)
