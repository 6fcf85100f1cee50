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
import urllib.error
import urllib.request
from pathlib import Path

from polling import wait_until

REPO = Path(__file__).resolve().parent.parent
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
        command = [
            nginx_binary(),
            "-p",
            f"{self.folder}/",
            "-c",
            str(self.folder / "conf" / "nginx.conf"),
            "-e",
            "stderr",
        ]
        if os.geteuid() == 0:
            command += ["-g", "user nobody nogroup;"]
        log = (self.folder / "logs" / "nginx.log").open("ab")
        with log:
            # Its own process group: a crash (kill) takes the workers with the master.
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(self._answers, timeout=10, what=f"nginx on {self.url}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.folder / "logs" / "nginx.log").read_text(errors="replace")
            raise RuntimeError(f"nginx exited with {self.process.returncode}: {log[-2000:]}")
        return self.status("/healthz") == 200

    def status(self, path: str) -> int:
        """HTTP status of a GET (0 when nothing answers)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def kill(self) -> None:
        """Crash: SIGKILL the master and its workers at once."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, *, graceful: bool = True) -> None:
        """SIGQUIT (finish requests) or SIGTERM, then wait; SIGKILL after 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT if graceful else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
