"""The load balancer: nginx on 127.0.0.1 proxying to the ready pods, reloaded on every change."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from support.nginx_runner import start_nginx, stop_nginx
from support.polling import wait_until

if TYPE_CHECKING:
    import subprocess

LB_CONF = """\
worker_processes 1;
pid run/nginx.pid;
error_log stderr warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path run/client_body;
    proxy_temp_path run/proxy;
    fastcgi_temp_path run/fastcgi;
    uwsgi_temp_path run/uwsgi;
    scgi_temp_path run/scgi;
    include upstream.conf;
    server {{
        listen {address};
        location / {{
            proxy_pass http://pods;
            # Like a cloud load balancer: a pod that fails is skipped, the client sees no error.
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 1s;
            add_header X-LB-Generation $lb_generation always;
        }}
    }}
}}
"""


class LoadBalancer:
    """nginx in front of the pods; ``set_backends`` rewrites the upstream, waits for the reload."""

    def __init__(self, folder: Path, address: str) -> None:
        """Lay out the folder; start() launches."""
        self.folder, self.address = folder, address
        for sub in ("conf", "run", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "conf" / "nginx.conf").write_text(LB_CONF.format(address=address))
        self.generation = 0
        self.backends: list[str] = []
        self._write_upstream([], 0)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where clients send requests."""
        return f"http://{self.address}"

    def _write_upstream(self, backends: list[str], generation: int) -> None:
        servers = [f"    server {b} max_fails=0;" for b in backends] or [
            "    server 127.0.0.1:9 down;"
        ]
        text = "upstream pods {\n" + "\n".join(servers) + "\n}\n"
        text += f"map $host $lb_generation {{ default {generation}; }}\n"
        (self.folder / "conf" / "upstream.conf").write_text(text)

    def start(self) -> LoadBalancer:
        """Start nginx and wait until it answers."""
        self.process = start_nginx(self.folder)
        wait_until(
            lambda: self._generation() == self.generation, timeout=10, what="load balancer up"
        )
        return self

    def _generation(self) -> int | None:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:  # noqa: S310
                return int(response.headers["X-LB-Generation"])
        except urllib.error.HTTPError as exc:
            return int(exc.headers["X-LB-Generation"])
        except OSError:
            return None

    def curl(self) -> str:
        """One plain GET / through the load balancer, shown as a demo prints it."""
        with urllib.request.urlopen(self.url + "/", timeout=5) as response:  # noqa: S310
            body = " ".join(response.read().decode().split())
            return f"  curl {self.url}/  <- {response.headers['X-Pod-IP']:<11} {body}"

    def set_backends(self, backends: list[str]) -> None:
        """Send traffic to exactly these host:port backends, once nginx serves the change."""
        generation = self.generation + 1
        self._write_upstream(backends, generation)
        assert self.process is not None
        old_workers = self._workers()
        self.process.send_signal(signal.SIGHUP)
        # Done when the workers of the old configuration are gone: until then one of them
        # may still take a new connection and send it to the old backends.
        wait_until(
            lambda: self._generation() == generation and not old_workers & self._workers(),
            timeout=10,
            what="load balancer reload",
        )
        # Published only now, so that readers see what nginx really does.
        self.backends, self.generation = list(backends), generation

    def _workers(self) -> set[int]:
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
        return {int(child) for child in children.split()}

    def stop(self) -> None:
        """Stop nginx (by pid)."""
        if self.process is not None:
            stop_nginx(self.process)
