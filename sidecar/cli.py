"""Command-line entry point: settings, then the app; exit codes are part of the contract."""

from __future__ import annotations

import gc
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
    # The imports below create ~400 modules' objects and almost no garbage, yet set off ~70
    # collections (12.5 ms measured) on the way to the first page: the collector stays off
    # until the app has started its workers, then collects once, freezes what lives for
    # the whole run, and is switched on (app._serve).
    gc.disable()
    # Imported late so that --help and configuration errors answer without loading the
    # client; then only the client's parts we use (sidecar/kube_import.py), before the app
    # imports them.
    from sidecar.kube_import import import_client_lightly  # noqa: PLC0415

    client_fallback = import_client_lightly()
    from sidecar.app import run  # noqa: PLC0415

    return run(settings, os.environ, client_fallback=client_fallback)
