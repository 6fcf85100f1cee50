"""Run the cosign the release uses: ``tox -e cosign -- generate-key-pair`` (or verify, ...)."""

from __future__ import annotations

import os
import sys

from image.cosign import CosignBuildError, build


def main() -> None:
    """Build cosign if needed, then become it with the arguments given (exit 2 with one
    line when it cannot be built).
    """
    try:
        binary = build()
    except CosignBuildError as exc:
        print(f"cosign: {exc}", file=sys.stderr)
        sys.exit(2)
    os.execv(binary, [str(binary), *sys.argv[1:]])  # noqa: S606 - our own build, argv as given


if __name__ == "__main__":
    main()
