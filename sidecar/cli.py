"""Command-line entry point: settings, then the app; exit codes are part of the contract."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from sidecar.config import ConfigError, ExitCode, load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sidecar until SIGTERM/SIGINT; 2 for bad settings or a broken template."""
    try:
        settings = load_settings(os.environ, sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"podlister-sidecar: {exc}", file=sys.stderr)  # noqa: T201 - before logging exists
        return ExitCode.CONFIG
    # Imported late so that --help and configuration errors answer without loading the
    # client; then only the client's parts we use (sidecar/kube_import.py), before the app
    # imports them.
    from sidecar.kube_import import import_client_lightly  # noqa: PLC0415

    client_fallback = import_client_lightly()
    from sidecar.app import run  # noqa: PLC0415

    return run(settings, os.environ, client_fallback=client_fallback)
