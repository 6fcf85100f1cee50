"""Run the real sidecar program as a child process, and stop it by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from support.http import status
from support.page_html import shows_exactly
from support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# What a sidecar's folder holds once it has written a page (sorted): the three pages and
# the packaged page's style and script.
PAGE_FILES = ["index.html", "index.json", "index.txt", "page.css", "page.js"]


def write_kubeconfig(
    path: Path,
    server: str,
    *,
    token: str = "stand-in-token",
    token_file: Path | None = None,
    certificate_authority: Path | None = None,
) -> Path:
    """A kubeconfig for one bearer token (or a token file): plain http (the stand-in), or
    https checked by a CA.
    """
    cluster: dict[str, str] = {"server": server}
    if certificate_authority is not None:
        cluster["certificate-authority"] = str(certificate_authority)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "api", "cluster": cluster}],
        "users": [
            {
                "name": "user",
                "user": {"tokenFile": str(token_file)} if token_file else {"token": token},
            }
        ],
        "contexts": [{"name": "api", "context": {"cluster": "api", "user": "user"}}],
        "current-context": "api",
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


# Where the official client reads an in-cluster token, CA and namespace (fixed paths).
SERVICE_ACCOUNT_DIR = "/run/secrets/kubernetes.io/serviceaccount"


def in_cluster_prefix(token_dir: Path) -> list[str]:
    """A command prefix that shows token_dir at the in-cluster service-account path.

    In a private mount namespace of the sidecar alone: a tmpfs over /run (/var/run links
    there), and token_dir bound onto the path, so the kubelet's layout in token_dir (its
    ``..data`` swaps included) is what the client reads. Needs root (CI runs as root).
    """
    script = (
        "mount -t tmpfs podlister-run /run"
        f" && mkdir -p {SERVICE_ACCOUNT_DIR}"
        f' && mount --bind "{token_dir}" {SERVICE_ACCOUNT_DIR}'
        ' && exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def clean_environment() -> dict[str, str]:
    """The test process's environment without any PODLISTER_* or in-cluster variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PODLISTER_", "KUBERNETES_"))}


def run_to_exit(settings: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sidecar`` with only these settings until it exits by itself."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar"],
        env={**clean_environment(), **settings},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class SidecarProcess:
    """One ``python -m sidecar`` child with its own log file."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        output_dir: Path,
        log_path: Path,
        service: str = "web",
        namespace: str = "default",
        health_addr: str = "127.0.0.1:0",
        extra_env: dict[str, str] | None = None,
        command_prefix: list[str] | None = None,
        new_session: bool = False,
        python: str = sys.executable,
    ) -> None:
        """Prepare the environment; start() launches (in a session of its own: new_session,
        so that a test can signal its process group, as a terminal does).
        """
        self.log_path = log_path
        self.output_dir = output_dir
        self.health_addr = health_addr
        env = clean_environment()
        env.update(
            {
                "KUBECONFIG": str(kubeconfig),
                "PODLISTER_SERVICE": service,
                "PODLISTER_NAMESPACE": namespace,
                "PODLISTER_OUTPUT_DIR": str(output_dir),
                "PODLISTER_HEALTH_ADDR": health_addr,
                "PODLISTER_LOG_FORMAT": "json",
                "PODLISTER_IDLE_TIMEOUT": "5",
            }
        )
        env.update(extra_env or {})
        self.env = env
        self.command_prefix = command_prefix or []
        self.new_session = new_session
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SidecarProcess:
        """Launch the program; output goes to the log file."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command_prefix, self.python, "-m", "sidecar"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.new_session,
            )
        return self

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.process is not None
        return self.process.pid

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (other lines are skipped)."""
        records = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log records with this event name."""
        return [r for r in self.logs() if r.get("event") == name]

    def health_url(self, path: str) -> str:
        """URL of /healthz, /readyz or /metrics; needs a fixed port in health_addr."""
        return f"http://{self.health_addr}{path}"

    def probe(self, path: str) -> int:
        """HTTP status of a health path (0 when nothing answers)."""
        return status(self.health_url(path))

    def metrics_text(self) -> str:
        """The /metrics page."""
        with urllib.request.urlopen(self.health_url("/metrics"), timeout=2) as response:  # noqa: S310
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0 when absent)."""
        wanted = name
        if labels:
            wanted += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in self.metrics_text().splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_metric(self, name: str, value: float, *, timeout: float = 10.0, **labels: str) -> None:
        """Wait (bounded) until the sample reads value: a metric is updated just after the
        files it describes, so a test reads it only once it is there.
        """
        wanted = f"{name}{labels or ''} == {value}"
        wait_until(lambda: self.metric(name, **labels) == value, timeout=timeout, what=wanted)

    def addresses(self) -> list[str] | None:
        """The addresses in index.json, or None while there is none."""
        try:
            data = json.loads((self.output_dir / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return list(data["addresses"])

    def wait_file(self, name: str, check: Callable[[str], bool], *, timeout: float = 10.0) -> str:
        """Wait until the output file ``name`` exists and its text passes check; return the text.

        Each page file is replaced on its own: a test reads only the file it waited for.
        """

        def text_if_good() -> list[str]:
            # In a list, so that an empty file that passes the check counts as found.
            text = (self.output_dir / name).read_text(encoding="utf-8")
            return [text] if check(text) else []

        return wait_until(text_if_good, timeout=timeout, what=f"{name} as expected")[0]

    def wait_addresses(self, expected: list[str], *, timeout: float = 10.0) -> None:
        """Wait until index.json lists exactly these addresses."""
        wait_until(
            lambda: self.addresses() == expected, timeout=timeout, what=f"addresses {expected}"
        )

    def wait_page(self, expected: list[str], *, timeout: float = 10.0) -> None:
        """Wait until all three files list exactly these addresses as ready (a template of
        the user's own: until its page names each of them).
        """
        self.wait_addresses(expected, timeout=timeout)
        lines = "".join(f"{address}\n" for address in expected)
        self.wait_file("index.txt", lambda text: text == lines, timeout=timeout)
        self.wait_file("index.html", lambda html: shows_exactly(html, expected), timeout=timeout)

    def signal(self, signum: int) -> None:
        """Send a signal to the child."""
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, waiting at most timeout seconds."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 5 s; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)


def in_private_tmpfs(output_dir: Path, size: str = "64k") -> list[str]:
    """A command prefix that runs the sidecar with a small tmpfs of its own as output folder."""
    mount = f'mount -t tmpfs -o size={size},mode=0755 podlister-test "{output_dir}" && exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix.insert(1, "--map-root-user")
    return [*prefix, "sh", "-c", mount, "sh"]
