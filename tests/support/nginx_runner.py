"""Run Debian's nginx with the base's nginx.conf, unchanged, for one local pod.

The pod's folder is nginx's prefix: ``html/`` (the sidecar's output), ``run/`` (pid, temp
paths), ``conf/nginx.conf`` (a symlink to k8s/nginx/nginx.conf, never a copy) and
``conf/listen.conf`` (this pod's own address), ``logs/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

from support.http import status
from support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "k8s" / "nginx" / "nginx.conf"
INSTALL_HINT = "nginx is not installed: apt-get install nginx-light (Debian) and retry"


def nginx_binary() -> str:
    """The nginx executable, or an error that says how to install it."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        raise FileNotFoundError(INSTALL_HINT)
    return found


def start_nginx(folder: Path) -> subprocess.Popen[bytes]:
    """Start nginx in the foreground with folder as its prefix and conf/nginx.conf.

    It gets its own process group, so a kill takes the workers with the master; its
    output goes to logs/nginx.log.
    """
    command = [
        nginx_binary(),
        "-p",
        f"{folder}/",
        "-c",
        str(folder / "conf" / "nginx.conf"),
        "-e",
        "stderr",
    ]
    if os.geteuid() == 0:
        # Started as root, the workers would otherwise be www-data; nobody is what a pod's
        # non-root UID gets in the tests' folders.
        command += ["-g", "user nobody nogroup;"]
    with (folder / "logs" / "nginx.log").open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_nginx(process: subprocess.Popen[bytes], *, graceful: bool = True) -> None:
    """SIGQUIT (finish requests) or SIGTERM, then wait; SIGKILL to the group after 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGQUIT if graceful else signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class NginxPod:
    """One nginx bound to host:port with its own prefix folder."""

    def __init__(self, folder: Path, host: str, port: int = 8080) -> None:
        """Lay out the prefix folder; start() launches nginx."""
        self.folder, self.host, self.port = folder, host, port
        self.html = folder / "html"
        for sub in ("html", "run", "conf", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # Started as root, nginx's workers run as nobody (as a pod's run as a non-root UID):
        # they must be able to reach the pages through pytest's private (0700) folders.
        for path in (self.html, *self.html.parents):
            if path == Path(tempfile.gettempdir()) or path == path.parent:
                break
            path.chmod(path.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
        link = folder / "conf" / "nginx.conf"
        if not link.is_symlink():
            link.symlink_to(NGINX_CONF)
        (folder / "conf" / "listen.conf").write_text(f"listen {host}:{port};\n", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of this pod."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> NginxPod:
        """Start nginx in the foreground (the conf says daemon off) and wait until it answers."""
        self.process = start_nginx(self.folder)
        wait_until(self._answers, timeout=60, what=f"nginx on {self.url}")  # a busy machine
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.folder / "logs" / "nginx.log").read_text(errors="replace")
            raise RuntimeError(f"nginx exited with {self.process.returncode}: {log[-2000:]}")
        return self.status("/healthz") == 200

    def status(self, path: str) -> int:
        """HTTP status of a GET (0 when nothing answers)."""
        return status(self.url + path)

    def kill(self) -> None:
        """Crash: SIGKILL the master and its workers at once."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, *, graceful: bool = True) -> None:
        """SIGQUIT (finish requests) or SIGTERM, then wait; SIGKILL after 10 s."""
        if self.process is not None:
            stop_nginx(self.process, graceful=graceful)
