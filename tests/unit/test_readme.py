"""The README and docs/: the layout says what the package holds, every command a page gives
is run by a test, and the harnesses import what they share from support.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from support import documented

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "sidecar"
BLOCK = re.compile(r"<!-- modules:[^>]*-->\n(.*?)<!-- /modules -->", re.DOTALL)
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def expected_lines() -> list[str]:
    """One line per module of sidecar/ (a folder's line from its __init__), by path: its
    name and the first line of its docstring.
    """
    lines = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        if relative.name == "__init__" and relative.parent != Path():
            name = f"{relative.parent.as_posix()}/"
        elif relative.name.startswith("__"):
            continue
        else:
            name = relative.as_posix()
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring, f"{path} has no module docstring"
        lines.append(f"- `{name}`: {docstring.strip().splitlines()[0].rstrip()}")
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


# The test harnesses (folders of tests/) and the other harnesses each may import: what more
# than one uses lives in support, so no harness reaches sideways into another.
HARNESS_IMPORTS = {
    "kubestub": set(),
    "localcluster": {"kubestub"},
    "controlplane": set(),
    "node": {"controlplane", "image"},  # a node is a control plane plus images
    "image": set(),
    "linters": set(),
    "support": set(),
}


def imported_harnesses(package: Path) -> set[str]:
    """The top-level tests/ packages the package's modules import (sidecar and the standard
    library left out).
    """
    harnesses = {p.name for p in (REPO / "tests").iterdir() if (p / "__init__.py").is_file()}
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found & harnesses - {package.name}


def test_harnesses_import_support_not_each_other() -> None:
    """Each test harness imports what it shares from tests/support and no other harness
    beyond the ones listed (the node extends the control plane; the local cluster serves the
    stand-in): moving a shared helper into a harness fails here.
    """
    for name, allowed in HARNESS_IMPORTS.items():
        sideways = imported_harnesses(REPO / "tests" / name) - allowed - {"support"}
        assert not sideways, f"tests/{name} imports {sorted(sideways)}: move it to support"


def commands_given() -> dict[str, str]:
    """Each command in a ``sh`` block of the README or a docs/ page, and the page."""
    given = {}
    for page in PAGES:
        for block in SH_BLOCK.findall(page.read_text(encoding="utf-8")):
            for line in block.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    given[line.strip()] = page.name
    return given


def test_every_command_a_page_gives_is_run_by_a_test() -> None:
    """Each command of the pages is in support/documented.py with the test that runs it, and
    each command there is on a page: a page that gives a command nobody runs fails here.
    """
    given = commands_given()
    unknown = {command: page for command, page in given.items() if command not in documented.RUN_BY}
    assert not unknown, f"commands no test runs (add them to support/documented.py): {unknown}"
    assert set(documented.RUN_BY) == set(given), set(documented.RUN_BY) - set(given)


def test_each_test_named_for_a_command_exists_and_takes_it_from_the_table() -> None:
    """The test named for a command exists, and its file takes the command from the table
    (support/documented.py), so the text it runs is the text a reader copies.
    """
    names = {value: name for name, value in vars(documented).items() if isinstance(value, str)}
    for command, (path, function) in documented.RUN_BY.items():
        if command == documented.TEST_IT:
            continue  # what CI runs on every landing
        text = (REPO / "tests" / path).read_text(encoding="utf-8")
        assert f"def {function}(" in text, (path, function)
        assert f"documented.{names[command]}" in text, (path, names[command])


def test_the_readme_tells_a_user_what_trips_them() -> None:
    """What new users tripped over is said where they look: a drain needs
    --delete-emptydir-data and can wait on the PodDisruptionBudget; the image of an overlay of
    your own is set in that overlay; the membership rule and its two differences from
    kube-proxy (ports, topology).
    """
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for words in (
        "--delete-emptydir-data",
        "PodDisruptionBudget keeps one pod up",
        "set in one place",
        "read as kube-proxy reads",
        "ports are ignored",
        "topology",
    ):
        assert words in readme, words
