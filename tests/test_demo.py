"""The demo a newcomer runs, exactly as the README gives it: `.venv/bin/tox -e demo -- --keep`.

It must print the URL to open at once (also into a file), keep running, and on Ctrl-C or
SIGTERM stop every nginx and sidecar it started and leave no folder behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from polling import wait_until
from procstat import processes_using

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).parent.parent
README_COMMAND = ".venv/bin/tox -e demo -- --keep"
URL_LINE = re.compile(r"^open (http://127\.0\.0\.1:18080/) in a browser", re.MULTILINE)
ROOT_LINE = re.compile(r"^local cluster in (\S+)$", re.MULTILINE)
# tox builds its demo environment on the first run: allow for the package install.
START_BOUND = 240


class Demo:
    """The README's command, its output going to a file as in `... > demo.log`."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                README_COMMAND.split(),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group, as a terminal gives a foreground job: Ctrl-C
                # reaches every process in it.
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        def found() -> list[re.Match[str]]:
            if self.process.poll() is not None:
                raise AssertionError(f"the demo ended early:\n{self.output()}")
            match = pattern.search(self.output())
            return [match] if match else []

        return wait_until(found, timeout=timeout, interval=0.1, what=pattern.pattern)[0]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """The running demo; killed (by its process group) if the test did not stop it."""
    running = Demo(tmp_path / "demo.log")
    yield running
    running.kill()


def started(demo: Demo) -> Path:
    """Wait until the demo has printed its URL and finished scaling; its folder."""
    url = demo.wait_for(URL_LINE, START_BOUND)
    output = demo.output()
    # At once: the URL comes before the first scaling step has reported anything.
    assert "scaled to 3" not in output[: url.start()]
    root = Path(demo.wait_for(ROOT_LINE, 10).group(1))
    demo.wait_for(re.compile(r"^running; open ", re.MULTILINE), 120)
    assert root.is_dir()
    assert len(processes_using(root)) >= 4, "two pods, nginx and sidecar each"
    return root


def assert_all_gone(root: Path) -> None:
    """No process of the demo's is left, and its folder is removed."""
    wait_until(
        lambda: not processes_using(root) and not root.exists(),
        timeout=60,
        interval=0.1,
        what=f"no process and no folder left of {root}",
    )


@pytest.mark.timeout(420)
def test_ctrl_c_stops_everything(demo: Demo) -> None:
    """Ctrl-C (SIGINT to the foreground process group) stops the demo; nothing is left.

    tox itself reports any interrupted run as failed (exit 1); the demo under it stops cleanly.
    """
    root = started(demo)
    os.killpg(demo.process.pid, signal.SIGINT)
    demo.process.wait(timeout=60)
    assert_all_gone(root)
    assert f"stopped every process; removed {root}" in demo.output()


@pytest.mark.timeout(420)
def test_sigterm_stops_everything(demo: Demo) -> None:
    """SIGTERM to the command (tox) ends it; the demo notices and stops everything it started."""
    root = started(demo)
    demo.process.send_signal(signal.SIGTERM)
    demo.process.wait(timeout=60)
    assert_all_gone(root)
