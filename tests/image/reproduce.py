"""Build the image as a release does and print its ID: ``tox -e reproduce``.

No cache, every date in the image the commit's time (or $SOURCE_DATE_EPOCH): two runs on one
commit and one base print one ID, the ID ``tox -e release`` pushed. Exit 2 with one line when
the build fails.
"""

from __future__ import annotations

import argparse
import sys

from image.build import BASE_IMAGE
from image.release import ReleaseError, build, commit_time, version


def main(argv: list[str] | None = None) -> int:
    """Build, print the ID and the time every date was set to."""
    parser = argparse.ArgumentParser(prog="tox -e reproduce --", description=__doc__)
    parser.add_argument("--base", help=f"PYTHON_IMAGE to build on (e.g. {BASE_IMAGE})")
    args = parser.parse_args(argv)
    try:
        image = build(f"{version()}-reproduced", args.base)
        epoch = commit_time()
    except ReleaseError as exc:
        print(f"reproduce: {exc}", file=sys.stderr)
        return 2
    print(f"image {image} (every date {epoch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
