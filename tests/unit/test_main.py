"""``python -m sidecar``: the entry point answers a bad setting before it starts anything."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from sidecar.__main__ import main
from sidecar.config import ExitCode

if TYPE_CHECKING:
    import pytest


def test_a_missing_setting_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without PODLISTER_SERVICE, main() returns 2 and says which variable, on stderr."""
    for name in ("PODLISTER_SERVICE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PODLISTER_OUTPUT_DIR", "/nonexistent")
    monkeypatch.setattr(sys, "argv", ["podlister-sidecar"])
    assert main() == ExitCode.CONFIG
    assert capsys.readouterr().err == "podlister-sidecar: PODLISTER_SERVICE is required\n"
