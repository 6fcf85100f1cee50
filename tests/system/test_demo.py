"""The demos a newcomer runs, exactly as the pages give them (support/documented.py), and
the README's "Try it" line on a fresh clone.

With --keep a demo must print the URL to open at once (also into a file), keep running, and on
Ctrl-C or SIGTERM stop every process it started and leave no folder behind. Without --keep it
runs its steps and exits; a busy --port is one line and exit 2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support import documented
from support.polling import wait_until
from support.procstat import processes_using
from support.verified_cache import locked, root

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
# The last command of the README's "Try it" line.
ONCE = documented.TRY_IT.rsplit(" && ", 1)[1]
URL_LINE = re.compile(r"^open (http://127\.0\.0\.1:\d+/) in a browser", re.MULTILINE)
ROOT_LINE = re.compile(r"^local cluster in (\S+)$", re.MULTILINE)
PLANE_ROOT_LINE = re.compile(r"^control plane folder (\S+)$", re.MULTILINE)
# tox builds its demo environment on the first run: allow for the package install.
START_BOUND = 240


class Demo:
    """The documented command, its output going to a file as in `... > demo.log`."""

    def __init__(self, log: Path, command: str = documented.DEMO_KEEP) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command.split(),
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
    """The running demo; stopped with SIGTERM if the test did not stop it, as a user does, so
    that it removes its folder (SIGKILL would leave it in /tmp); killed only if it ends no
    other way.
    """
    running = Demo(tmp_path / "demo.log")
    yield running
    try:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
            running.process.wait(timeout=60)
        found = ROOT_LINE.search(running.output())
        if found:
            assert_all_gone(Path(found.group(1)))
    finally:
        running.kill()


def started(demo: Demo, root_line: re.Pattern[str] = ROOT_LINE) -> Path:
    """Wait until the demo has printed its URL and finished scaling; its folder."""
    url = demo.wait_for(URL_LINE, START_BOUND)
    output = demo.output()
    # At once: the URL comes before the first scaling step has reported anything.
    assert "scaled to" not in output[: url.start()]
    assert "kubectl" not in output[: url.start()]
    root = Path(demo.wait_for(root_line, START_BOUND).group(1))
    demo.wait_for(re.compile(r"^running; ", re.MULTILINE), START_BOUND)
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
def test_the_demos_sidecars_log_nothing_to_worry_about(demo: Demo) -> None:
    """A demo that ran its steps: no sidecar logged a warning or an error (before: every one
    warned client_import_fallback, the demo's kubernetes not being the locked one).
    """
    root = started(demo)
    logs = sorted(root.glob("**/sidecar.log"))
    assert logs
    lines = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    assert any(line["event"] == "membership_changed" for line in lines)
    assert [line for line in lines if line["level"] not in {"debug", "info"}] == []


@pytest.mark.timeout(420)
def test_sigterm_stops_everything(demo: Demo) -> None:
    """SIGTERM to the command (tox) ends it; the demo notices and stops everything it started."""
    root = started(demo)
    demo.process.send_signal(signal.SIGTERM)
    demo.process.wait(timeout=60)
    assert_all_gone(root)


@pytest.mark.timeout(420)
def test_without_keep_it_runs_its_steps_and_exits(tmp_path: Path) -> None:
    """`tox -e demo` scales 3 -> 6 -> 2 and exits 0 by itself, leaving nothing; it does not
    invite the reader to open a page that is about to go away.
    """
    once = Demo(tmp_path / "demo.log", ONCE)
    try:
        assert once.process.wait(timeout=START_BOUND + 120) == 0, once.output()
    finally:
        once.kill()
    output = once.output()
    assert "scaled to 2" in output
    assert URL_LINE.search(output) is None
    root = Path(ROOT_LINE.search(output).group(1))  # type: ignore[union-attr]
    assert_all_gone(root)


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """`tox -e demo -- --port N` with N taken: one line naming the port and --port, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = Demo(tmp_path / "demo.log", f"{ONCE} -- --port {port}")
        try:
            busy.process.wait(timeout=START_BOUND)
        finally:
            busy.kill()
    output = busy.output()
    said = [line for line in output.splitlines() if "not free" in line]
    assert said == [
        (
            f"port {port} on 127.0.0.1 is not free (Address already in use): choose another "
            "with --port, or leave --port out for a free one"
        )
    ], output
    assert "Traceback" not in output
    assert "demo: exit 2" in output


@pytest.mark.controlplane
@pytest.mark.timeout(600)
def test_controlplane_demo_stops_on_sigterm(tmp_path: Path) -> None:
    """`tox -e demo-controlplane -- --keep` prints the URL first (into a file, so line by
    line), keeps running, and SIGTERM to the command stops etcd, the API server, the
    controller manager, every nginx and sidecar, and removes its folder.
    """
    plane = Demo(tmp_path / "demo.log", documented.DEMO_CONTROLPLANE)
    try:
        root = started(plane, PLANE_ROOT_LINE)
        assert "KUBECONFIG=" in plane.output()
        plane.process.send_signal(signal.SIGTERM)
        plane.process.wait(timeout=60)
        assert_all_gone(root)
    finally:
        plane.kill()


@pytest.mark.timeout(900)
def test_try_it_on_a_fresh_clone(tmp_path: Path) -> None:
    """The README's "Try it" line, exactly as written, in a fresh clone: apt-get (a no-op
    where the packages are there), a virtualenv, tox, and the demo, which ends by itself
    having listed the pods through its load balancer.
    """
    clone = tmp_path / "podlister"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    # apt-get takes its own lock and fails at once when another run holds it.
    with locked(root() / "apt.lock", timeout=600):
        result = subprocess.run(
            ["bash", "-c", documented.TRY_IT],
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "scaled to 6" in result.stdout, result.stdout[-3000:]
    assert "scaled to 2" in result.stdout, result.stdout[-3000:]


@pytest.mark.timeout(600)
def test_the_everyday_loop_runs_the_unit_tier() -> None:
    """`.venv/bin/tox -e unit`, as docs/testing.md gives it: the unit tier passes, and only
    it (the tests it ran are unit tests).
    """
    result = subprocess.run(
        documented.UNIT.split(), cwd=REPO, capture_output=True, text=True, timeout=580, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^=+ \d+ passed", result.stdout, re.MULTILINE), result.stdout[-2000:]
    assert "tests/integration" not in result.stdout
