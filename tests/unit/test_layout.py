"""The package's shape, drawn from its imports: at most MAX_FLOORS floors, no circle, and no
module that imports the package it belongs to (an import running back up the tree).

A floor: a module stands one above everything it imports (type-checking imports count). The
layers themselves are import-linter's contracts in pyproject.toml (``tox -e lint``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[2] / "sidecar"
MAX_FLOORS = 8


def imports() -> dict[str, set[str]]:
    """Each module of sidecar and the modules of sidecar it imports."""
    graph = grimp.build_graph("sidecar", cache_dir=None)
    return {
        module: {m for m in graph.find_modules_directly_imported_by(module) if m != module}
        for module in graph.modules
    }


def test_no_circle_and_at_most_eight_floors() -> None:
    """No module reaches itself through its imports, and the tallest stands on 8 floors."""
    graph = imports()

    @functools.cache
    def floor(module: str, path: tuple[str, ...] = ()) -> int:
        assert module not in path, f"import circle: {' -> '.join((*path, module))}"
        return 1 + max((floor(m, (*path, module)) for m in graph[module]), default=0)

    floors = {module: floor(module) for module in graph}
    tallest = max(floors, key=floors.__getitem__)
    assert floors[tallest] <= MAX_FLOORS, (tallest, floors[tallest])


def test_no_module_imports_a_package_above_it() -> None:
    """sidecar.page.render imports sidecar.page.document, never sidecar.page or sidecar:
    a package's __init__ holds a docstring, and nothing below it reaches back up to it.
    """
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        above = {".".join(parts[:i]) for i in range(1, len(parts))}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            reached = {name for name in names if name in above}
            if isinstance(node, ast.ImportFrom) and node.level:
                reached.add(f"relative import in {path.name}")
            assert not reached, f"{'.'.join(parts)} imports {sorted(reached)}"


def test_every_module_has_its_unit_test_file() -> None:
    """sidecar/page/render.py is tested in tests/unit/page/test_render.py, and so on for each
    module (__main__ in test_main.py).
    """
    tests = PACKAGE.parent / "tests" / "unit"
    missing = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
        and not (
            tests / path.parent.relative_to(PACKAGE) / f"test_{path.stem.strip('_')}.py"
        ).is_file()
    ]
    assert not missing, missing
