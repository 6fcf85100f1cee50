"""The command-line flags both demos take (the stand-in one and the control plane one)."""

from __future__ import annotations

import argparse
import threading


def demo_arguments(prog: str, description: str | None) -> argparse.Namespace:
    """--keep (run until Ctrl-C) and --port (of the load balancer), parsed from sys.argv."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    parser.add_argument("--port", type=int, default=18080, help="load balancer port on 127.0.0.1")
    return parser.parse_args()


def hold(args: argparse.Namespace, hint: str) -> None:
    """With --keep, say what to try and wait until Ctrl-C (KeyboardInterrupt) ends the demo."""
    if args.keep:
        print(f"\nrunning; try: {hint}  (Ctrl-C stops)")  # noqa: T201 - the demo's output
        threading.Event().wait()
