"""A real control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

Every process runs in its own session with its log in the work folder, and is stopped by
pid. RBAC is on (``--authorization-mode=RBAC``); PodSecurity admission is on by default.
There is no scheduler and no kubelet: tests bind pods and report their status themselves
(see ``kubelet.py``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Self

from controlplane.build import build
from controlplane.rest import ApiError, Rest
from support.lifecycle import Lifecycle
from support.polling import wait_until
from support.ports import free_port
from support.sidecar_process import write_kubeconfig

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

ADMIN_TOKEN = "podlister-tests-admin"  # noqa: S105 - a throwaway token of a loopback server
SERVICE_CIDR = "10.96.0.0/16"
# Only what the tests need: Deployments make ReplicaSets make Pods; Services get
# EndpointSlices; ServiceAccounts get their default account and tokens; deleted
# namespaces and owners are cleaned up; HPAs find their targets.
CONTROLLERS = (
    "deployment",
    "horizontalpodautoscaling",
    "replicaset",
    "endpointslice",
    "serviceaccount",
    "serviceaccount-token",
    "namespace",
    "garbagecollector",
)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class _Daemon:
    """One long-running child process with its own log file."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name, self.command, self.log_path = name, command, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            msg = f"{self.name} exited with {self.process.returncode}; log ends:\n{tail}"
            raise RuntimeError(msg)

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash or an OOM kill would."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)


class ControlPlane(Lifecycle):
    """etcd, kube-apiserver and kube-controller-manager in a work folder; start(), stop()."""

    def __init__(
        self,
        workdir: Path,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        public_url: str | None = None,
        prefix: Sequence[str] = (),
        controllers: Sequence[str] = CONTROLLERS,
        extra_args: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Choose ports and paths; nothing runs before start().

        On loopback (the default) everything is reached at host. A node runs it inside its
        namespaces instead: every command behind prefix (``nsenter``), on a fixed port of
        the node's own address, reached from the host at public_url (a forward); the
        components inside use ``inner_kubeconfig``. extra_args: more flags per process.
        """
        self.workdir, self.host = workdir, host
        self.port = port or free_port(host)
        self.inner_url = f"https://{host}:{self.port}"
        self.url = public_url or self.inner_url
        self.cert_dir = workdir / "pki"
        self.ca_file = self.cert_dir / "apiserver.crt"
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.inner_kubeconfig = (
            workdir / "inner.kubeconfig" if public_url else self.admin_kubeconfig
        )
        self.rest = Rest(self.url, ADMIN_TOKEN, self.ca_file)
        self._prefix = tuple(prefix)
        self._controllers = tuple(controllers)
        self._extra_args = dict(extra_args or {})
        etcd_port = 2379 if prefix else free_port(host)
        self.etcd_url = f"http://{host}:{etcd_port}"
        self._daemons: list[_Daemon] = []

    def _start(self) -> Self:
        """Build if needed, start the three processes, return once /readyz says ok."""
        binaries = build()
        self.workdir.mkdir(parents=True, exist_ok=True)
        key = self._service_account_key()
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f"{ADMIN_TOKEN},admin,admin,system:masters\n", encoding="utf-8")
        etcd_url = self.etcd_url
        peer_port = 2380 if self._prefix else free_port(self.host)
        self.launch(
            "etcd",
            [
                str(binaries / "etcd"),
                f"-data-dir={self.workdir / 'etcd'}",
                f"-listen-client-url={etcd_url}",
                f"-listen-peer-url=http://{self.host}:{peer_port}",
            ],
        )
        self.launch("kube-apiserver", self._apiserver_command(binaries, etcd_url, key, tokens))
        wait_until(self._ready, timeout=START_TIMEOUT, interval=0.2, what="kube-apiserver ready")
        # The serving certificate exists only now: the API server writes it at start.
        write_kubeconfig(
            self.admin_kubeconfig, self.url, token=ADMIN_TOKEN, certificate_authority=self.ca_file
        )
        write_kubeconfig(
            self.inner_kubeconfig,
            self.inner_url,
            token=ADMIN_TOKEN,
            certificate_authority=self.ca_file,
        )
        self.launch(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={self.inner_kubeconfig}",
                f"--authentication-kubeconfig={self.inner_kubeconfig}",
                f"--authorization-kubeconfig={self.inner_kubeconfig}",
                "--leader-elect=false",
                f"--bind-address={self.host}",
                "--secure-port=0",
                f"--controllers={','.join(self._controllers)}",
                f"--service-account-private-key-file={key}",
                f"--root-ca-file={self.ca_file}",
                # Pods that are added or change readiness are written to slices at once.
                "--endpointslice-updates-batch-period=0s",
                # HPAs are looked at every second, not every 15.
                "--horizontal-pod-autoscaler-sync-period=1s",
            ],
        )
        return self

    def stop(self) -> None:
        """Stop every process by pid, newest first."""
        for daemon in reversed(self._daemons):
            daemon.stop()
        self._daemons.clear()

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver (etcd and the controller manager stay)."""
        self.kill("kube-apiserver")

    def kill(self, name: str) -> None:
        """SIGKILL one of the processes, as a crash would; start_again brings it back."""
        self._daemon(name).kill()

    def start_again(self, name: str) -> None:
        """Start a killed process again, as before."""
        self._daemon(name).start()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again, as before, and return once it is ready."""
        self._daemon("kube-apiserver").start()
        wait_until(self._ready, timeout=START_TIMEOUT, interval=0.05, what="kube-apiserver ready")

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (etcd's v3 JSON gateway), as
        the API server does every 5 minutes; returns that revision.
        """
        head = self._etcd("/v3/kv/range", {"key": base64.b64encode(b"\0").decode()})
        revision = int(head["header"]["revision"])
        self._etcd("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _etcd(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback etcd
            self.etcd_url + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def _daemon(self, name: str) -> _Daemon:
        return next(daemon for daemon in self._daemons if daemon.name == name)

    def pid(self, name: str) -> int:
        """The pid of one of the processes (etcd, kube-apiserver, kube-controller-manager)."""
        process = self._daemon(name).process
        if process is None:
            raise RuntimeError(f"{name} is not running")
        return process.pid

    def check_alive(self) -> None:
        """Raise with the log's tail if any of the processes has died."""
        for daemon in self._daemons:
            daemon.check_alive()

    def kubectl(
        self, *args: str, input_text: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; the result, whatever its exit code."""
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def token_for(
        self, namespace: str, service_account: str, *, bound_to_secret: str | None = None
    ) -> str:
        """A bound token of the ServiceAccount (TokenRequest API), as the kubelet would mount;
        bound to a Secret, deleting the Secret invalidates the token.
        """
        spec: dict[str, Any] = {}
        if bound_to_secret is not None:
            secret = self.rest.get(f"/api/v1/namespaces/{namespace}/secrets/{bound_to_secret}")
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "name": bound_to_secret,
                "uid": secret["metadata"]["uid"],
            }
        answer: dict[str, Any] = self.rest.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(answer["status"]["token"])

    def kubeconfig_for(self, path: Path, namespace: str, service_account: str) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount."""
        token = self.token_for(namespace, service_account)
        return write_kubeconfig(path, self.url, token=token, certificate_authority=self.ca_file)

    # ---- internals -----------------------------------------------------------------------

    def _service_account_key(self) -> Path:
        key = self.workdir / "service-account.key"
        if not key.exists():
            subprocess.run(
                ["openssl", "genrsa", "-out", str(key), "2048"],
                capture_output=True,
                check=True,
                timeout=60,
            )
        return key

    def _apiserver_command(
        self, binaries: Path, etcd_url: str, key: Path, tokens: Path
    ) -> list[str]:
        return [
            str(binaries / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--cert-dir={self.cert_dir}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={key}",
            f"--service-account-signing-key-file={key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # On loopback the API server would publish its own loopback address as the
            # endpoints of the `kubernetes` Service, which the API rejects; nothing there
            # needs them. A node's pods reach the API through that Service.
            f"--endpoint-reconciler-type={'lease' if self._prefix else 'none'}",
            *self._extra_args.get("kube-apiserver", ()),
        ]

    def launch(self, name: str, command: list[str], *, prefix: Sequence[str] = ()) -> None:
        """Start one more process of the cluster (behind the prefix given, else the
        control plane's), stopped with the rest.
        """
        if name == "kube-controller-manager":
            command = [*command, *self._extra_args.get(name, ())]
        behind = tuple(prefix) or self._prefix
        daemon = _Daemon(name, [*behind, *command], self.workdir / f"{name}.log")
        daemon.start()
        self._daemons.append(daemon)

    def _ready(self) -> bool:
        self.check_alive()
        if not self.ca_file.exists():
            return False
        try:
            return self.rest.text("/readyz", timeout=2) == "ok"
        except (ApiError, urllib.error.URLError, OSError, ValueError):
            return False
