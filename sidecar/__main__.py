"""``python -m sidecar`` and the ``podlister-sidecar`` command."""

from __future__ import annotations

import os


def main() -> int:
    """Run the sidecar until SIGTERM/SIGINT; 2 for a bad setting, 1 when a worker dies."""
    # First, before anything imports the client: in a pod, only the parts of it we use.
    from sidecar.api.client_import import import_client_lightly  # noqa: PLC0415

    client_fallback = import_client_lightly(os.environ)
    from sidecar.app import main as run  # noqa: PLC0415

    return run(client_fallback=client_fallback)


if __name__ == "__main__":
    raise SystemExit(main())
