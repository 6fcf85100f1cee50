"""What both demos share (the stand-in one and the control plane one): their flags, the load
balancer's address, and running until done, Ctrl-C, SIGTERM or the end of their parent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING

from support.nginx_runner import INSTALL_HINT, nginx_binary
from support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

# How often the waiting demo checks that whoever started it (tox) is still there: tox does
# not pass SIGTERM on, it just ends, and the demo must not outlive it with its servers.
PARENT_CHECK_SECONDS = 0.5
# The step in progress finishes what it does (its waits are bounded) before we stop.
STEP_GRACE_SECONDS = 45


class DemoStopped(Exception):
    """Raised in a step when the demo is stopping under it."""


def demo_arguments(prog: str, description: str | None) -> argparse.Namespace:
    """--keep (run until Ctrl-C) and --port (of the load balancer), parsed from sys.argv."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="load balancer port on 127.0.0.1 (default: a free one, printed at start)",
    )
    return parser.parse_args()


def line_buffered_output() -> None:
    """Each line out at once, also into a file or a pipe (tox, `> demo.log`)."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def lb_address(port: int | None) -> str:
    """127.0.0.1 and the port asked for, or a free one; a busy port ends the demo with 2."""
    if port is None:
        return f"127.0.0.1:{free_port()}"
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            print(
                f"port {port} on 127.0.0.1 is not free ({exc.strerror}): choose another with "
                "--port, or leave --port out for a free one",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
    return f"127.0.0.1:{port}"


def say(line: str) -> None:
    """Print, unless nobody reads any more (tox ended and took the pipe with it)."""
    with contextlib.suppress(OSError):
        print(line)


def run_until_stopped(
    steps: Callable[[threading.Event], None], *, keep: bool, closing: threading.Event
) -> list[str]:
    """Run steps in a thread until they end (or, with keep, until stopped); the failures.

    SIGINT, SIGTERM and the end of the parent process end the wait. Then
    closing is set (a step in progress gives up at its next check) and the steps thread gets
    STEP_GRACE_SECONDS to return before the caller stops everything.
    """
    done = threading.Event()
    # The handlers only note the signal: Event.set() takes a lock that the interrupted main
    # thread may hold (inside done.wait()), and would deadlock there. The loop below looks
    # at the note at least every PARENT_CHECK_SECONDS.
    signalled: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: signalled.append(number))
    failed: list[str] = []

    def run() -> None:
        try:
            steps(closing)
        except DemoStopped:
            return
        except (SystemExit, Exception) as exc:  # noqa: BLE001 - reported, then the demo stops
            if not closing.is_set():  # what a step ran into while stopping is no failure
                failed.append(f"{type(exc).__name__}: {exc}")
            done.set()
            return
        if not keep:
            done.set()

    parent = os.getppid()
    thread = threading.Thread(target=run, name="demo-steps", daemon=True)
    thread.start()
    while not done.wait(PARENT_CHECK_SECONDS) and not signalled:
        if os.getppid() != parent:
            say("the process that started the demo is gone: stopping")
            break
    closing.set()
    thread.join(timeout=STEP_GRACE_SECONDS)
    return failed


def demo_start(prog: str, description: str | None) -> tuple[argparse.Namespace, str] | None:
    """What every demo does first: output line by line, its arguments, nginx found, the load
    balancer's address; None (the reason printed) when nginx is not installed.
    """
    line_buffered_output()
    args = demo_arguments(prog, description)
    try:
        nginx_binary()
    except FileNotFoundError:
        print(INSTALL_HINT, file=sys.stderr)
        return None
    return args, lb_address(args.port)
