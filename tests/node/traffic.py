"""Clients inside the node for the tests: a paced request loop that records every answer,
and a watcher that records when each pod became Ready or began to be deleted.

Both run in threads of the test process (connections made inside the node's network
namespace), are bounded by a deadline, and are stopped by the test.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Any

from node.cluster import NODE_NAME
from node.pods import is_ready

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.cluster import Node


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request: when it was sent (monotonic), whether it got a 200, what it listed."""

    at: float
    ok: bool
    listed: tuple[str, ...]
    error: str = ""


class PacedClient:
    """GET host:port/path at a fixed rate, each on a new connection, until stopped."""

    def __init__(
        self,
        node: Node,
        host: str,
        port: int,
        path: str = "/index.txt",
        *,
        per_second: float = 20,
        max_seconds: float = 300,
        workers: int = 1,
        on: str = NODE_NAME,
    ) -> None:
        """Start sending at once (workers threads, each at per_second / workers), from the
        node named on (or the machine outside the cluster).
        """
        self._node, self._host, self._port, self._path = node, host, port, path
        self._on = on
        self._interval = workers / per_second
        self._deadline = time.monotonic() + max_seconds
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self._threads = [
            threading.Thread(target=self._loop, name=f"client-{i}") for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set() and time.monotonic() < self._deadline:
            sent = time.monotonic()
            try:
                answer = self._node.http(self._host, self._port, self._path, timeout=5, on=self._on)
                result = Answer(sent, answer.status == 200, tuple(answer.text().split()))
                if answer.status != 200:
                    result = dataclasses.replace(result, error=f"HTTP {answer.status}")
            except OSError as exc:
                result = Answer(sent, ok=False, listed=(), error=repr(exc))
            with self._lock:
                self.answers.append(result)
            next_at += self._interval
            self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[Answer]:
        """Stop and return every answer, oldest first."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            return sorted(self.answers, key=lambda answer: answer.at)

    def answered_since(self, at: float) -> int:
        """How many requests sent after at (monotonic) have their answer (any answer)."""
        with self._lock:
            return sum(1 for answer in self.answers if answer.at > at)

    def failures(self) -> list[Answer]:
        """The answers so far that were not a 200."""
        with self._lock:
            return [answer for answer in self.answers if not answer.ok]


class PodWatcher:
    """Polls the pods every poll seconds and notes, per pod IP, when it was first seen Ready
    and when first seen with a deletionTimestamp (monotonic times of this process).
    """

    def __init__(
        self,
        list_pods: Callable[[], list[dict[str, Any]]],
        *,
        poll: float = 0.1,
        max_seconds: float = 300,
    ) -> None:
        """Start polling at once."""
        self._list_pods, self._poll = list_pods, poll
        self._deadline = time.monotonic() + max_seconds
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.ready_at: dict[str, float] = {}
        self.deleting_at: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name="pod-watcher")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set() and time.monotonic() < self._deadline:
            now = time.monotonic()
            try:
                found = self._list_pods()
            except (OSError, RuntimeError):
                found = []
            with self._lock:
                for pod in found:
                    ip = pod.get("status", {}).get("podIP")
                    if not ip:
                        continue
                    if "deletionTimestamp" in pod["metadata"]:
                        self.deleting_at.setdefault(ip, now)
                    elif is_ready(pod):
                        self.ready_at.setdefault(ip, now)
            self._stopping.wait(self._poll)

    def stop(self) -> None:
        """Stop polling."""
        self._stopping.set()
        self._thread.join(timeout=10)


def listed_after_deletion(
    answers: list[Answer], deleting_at: dict[str, float], grace: float = 2.0
) -> list[tuple[Answer, str]]:
    """Each answer and pod IP it listed though that pod's deletion had begun more than
    grace seconds before the request was sent.
    """
    return [
        (answer, ip)
        for answer in answers
        for ip in answer.listed
        if ip in deleting_at and answer.at > deleting_at[ip] + grace
    ]
