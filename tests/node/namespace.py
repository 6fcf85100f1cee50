"""The namespaces a test node lives in, and the ways in from the host.

A holder process is pid 1 of new PID, network and mount namespaces (``unshare``). Every
process of the node is started inside all three (``nsenter``), so the bridge, the pod and
Service addresses, kube-proxy's rules and the kubelet's mounts exist only there, and killing
the holder ends every process in it: containers, shims and all. The host reaches the node
through the namespace: commands with ``Namespaces.command`` (as a user types them, after
``nsenter``), Python sockets with ``connect`` (opened by a thread that joined the namespace),
and ``Forward``, a loopback port of the host that leads to an address inside.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import selectors
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Self

from support.polling import wait_until

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 10.0


class Namespaces:
    """PID, network and mount namespaces held by one process (the pause binary as init)."""

    def __init__(self, init_binary: Path, log_path: Path) -> None:
        """Nothing runs before start()."""
        self._init_binary, self._log_path = init_binary, log_path
        self._unshare: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def start(self) -> Self:
        """Make the namespaces; return once their init runs."""
        with self._log_path.open("ab") as log:
            # --propagation private: nothing mounted inside reaches the host's mount table.
            # --kill-child: when unshare dies, so does the init, and with it the namespace;
            # and unshare dies with this process (a test killed half-way leaves no node).
            self._unshare = subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    "--kill-child=SIGKILL",
                    "--mount-proc",
                    "--net",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    str(self._init_binary),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl before exec
            )
        self.init_pid = wait_until(self._child_of_unshare, timeout=10, what="the node's init")
        return self

    def _child_of_unshare(self) -> int:
        assert self._unshare is not None
        if self._unshare.poll() is not None:
            msg = f"unshare exited with {self._unshare.returncode}: {self._log_path.read_text()}"
            raise RuntimeError(msg)
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        pids = children.read_text(encoding="ascii").split()
        if not pids:
            return 0
        # The child has forked, but may not have joined the new namespaces yet.
        if Path(f"/proc/{pids[0]}/ns/net").readlink() == Path("/proc/self/ns/net").readlink():
            return 0
        return int(pids[0])

    def command(self, *args: str, mount: bool = True) -> list[str]:
        """Args as run inside the namespaces (the node's mounts too, unless mount=False)."""
        scope = ["--net", "--pid", "--mount"] if mount else ["--net"]
        return ["nsenter", f"--target={self.init_pid}", *scope, "--", *args]

    def run(
        self, *args: str, timeout: float = 60, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside; the result whatever its exit code."""
        return subprocess.run(
            self.command(*args),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def must(self, *args: str, timeout: float = 60) -> str:
        """Run a command inside; its output, or RuntimeError with its error text."""
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            msg = f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            raise RuntimeError(msg)
        return result.stdout

    def net_path(self) -> str:
        """The network namespace's handle, for setns."""
        return f"/proc/{self.init_pid}/ns/net"

    def stop(self) -> None:
        """SIGKILL the init: the kernel then kills every process left in the PID namespace,
        and the network and mount namespaces go with the last of them.
        """
        if self._unshare is None:
            return
        if self.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        # unshare reaps its child and exits; killed first, it would leave the init a
        # zombie of the machine's pid 1.
        try:
            self._unshare.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._unshare.pid, signal.SIGKILL)
            self._unshare.wait(timeout=STOP_TIMEOUT)
        self._unshare = None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it ends (so the node
    is started from the main thread, which lives as long as its process).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


class Dialer:
    """Opens TCP connections inside a network namespace: one thread joins it (setns changes
    the calling thread only) and creates the sockets; a socket keeps its namespace for life.
    """

    def __init__(self, net_path: str) -> None:
        """Threads that join the namespace before their first job: several, so that a
        connection waiting on a lost peer does not hold back the others.
        """
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="netns", initializer=_join, initargs=(net_path,)
        )

    def connect(self, address: tuple[str, int], timeout: float = 5) -> socket.socket:
        """A socket connected to address inside the namespace."""
        future = self._pool.submit(socket.create_connection, address, timeout)
        try:
            return future.result(timeout=timeout + 1)
        except TimeoutError:
            # Still queued or connecting: a socket it makes later is closed, not leaked.
            future.add_done_callback(_close_made)
            raise

    def close(self) -> None:
        """Let the thread end."""
        self._pool.shutdown(wait=True)


def _close_made(future: concurrent.futures.Future[socket.socket]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _join(net_path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(net_path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({net_path}): {os.strerror(error)}")
    finally:
        os.close(fd)


class Forward:
    """A loopback port of the host whose connections lead to one address in the namespace.

    For clients that cannot enter it (urllib, Chromium): bytes are copied both ways as they
    come; a connection closed on either side closes the other.
    """

    def __init__(self, dialer: Dialer, target: tuple[str, int]) -> None:
        """Listen on a free loopback port; serve until close()."""
        self._dialer, self._target = dialer, target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._closing = threading.Event()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name=f"forward-{self.port}")
        self._thread.start()

    @property
    def address(self) -> str:
        """host:port to connect to."""
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._closing.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif sock in self._peers:  # not closed with its peer earlier in this round
                    self._pump(sock)
        for sock in [self._listener, *self._peers]:
            sock.close()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            inside = self._dialer.connect(self._target)
        except OSError:
            client.close()
            return
        for sock in (client, inside):
            sock.setblocking(False)  # noqa: FBT003 - the socket API's own positional flag
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[inside] = inside, client

    def _pump(self, sock: socket.socket) -> None:
        other = self._peers[sock]
        try:
            data = sock.recv(65536)
            if data:
                other.setblocking(True)  # noqa: FBT003
                other.sendall(data)
                other.setblocking(False)  # noqa: FBT003
                return
        except OSError:
            pass
        for end in (sock, other):
            self._selector.unregister(end)
            self._peers.pop(end, None)
            end.close()

    def close(self) -> None:
        """Stop serving and close every connection."""
        self._closing.set()
        self._thread.join(timeout=STOP_TIMEOUT)
