"""The error policy: what the watch loop does after each kind of failure, and the streak.

One table, as client-go's Reflector keeps its ``DefaultWatchErrorHandler``: per kind, whether
the state must be listed again, whether it is a failure of the streak (counted, waited for
with a backoff step, marking the page stale from the second one), the log level, and whether
it is logged once per streak rather than at every retry. A streak starts at the first failed
request and ends when the API answers again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import TYPE_CHECKING, Literal

import structlog

from sidecar.metrics import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.api.errors import ApiError
    from sidecar.backoff import Backoff
    from sidecar.metrics import Metrics

log = structlog.get_logger("sidecar.watch")


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """What the loop does about one kind of failure."""

    relist: bool
    """The state may be wrong or too old: list before watching again."""
    failure: bool
    """A failure of the streak: counted, a backoff step waited, the page stale from the 2nd."""
    level: Literal["info", "warning", "error"]
    """The level of its log line."""
    once: bool = False
    """Logged once per streak (data problems, RBAC), not at every retry."""
    reload_credentials: bool = False
    """Read the token (or kubeconfig) again before the next request."""


# fmt: off
RULES: dict[ErrorKind, Rule] = {
    # 410 after a compaction or a long disconnect: normal, relist at once (client-go: V(4)).
    ErrorKind.EXPIRED: Rule(relist=True, failure=False, level="info"),
    # Refused, reset, DNS; a list or a watch's head that timed out; 5xx; 429; other 4xx;
    # an ERROR event; a watch that ended at once: wait and retry, every retry logged.
    ErrorKind.CONNECTION: Rule(relist=False, failure=True, level="warning"),
    ErrorKind.IDLE: Rule(relist=False, failure=True, level="warning"),
    ErrorKind.SERVER: Rule(relist=False, failure=True, level="warning"),
    ErrorKind.THROTTLED: Rule(relist=False, failure=True, level="warning"),
    ErrorKind.NOT_FOUND: Rule(relist=False, failure=True, level="warning"),
    ErrorKind.CLIENT: Rule(relist=False, failure=True, level="warning"),
    ErrorKind.WATCH_ERROR: Rule(relist=False, failure=True, level="warning"),
    ErrorKind.EMPTY_WATCH: Rule(relist=False, failure=True, level="warning"),
    # A rotated token: read it now, not at the client's own 60 s re-read.
    ErrorKind.UNAUTHORIZED: Rule(
        relist=False, failure=True, level="warning", reload_credentials=True
    ),
    # RBAC: what to grant to whom, once per streak.
    ErrorKind.FORBIDDEN: Rule(relist=False, failure=True, level="error", once=True),
    # Data we cannot use: our state may be wrong; once per streak so garbage cannot flood.
    ErrorKind.MALFORMED: Rule(relist=True, failure=True, level="warning", once=True),
}
# fmt: on
# The page says the list may be out of date once a retry has failed too: one failure that
# the next attempt repairs (a reset connection) is not worth two rewrites of every page.
STALE_AFTER_FAILURES = 2
_USER = re.compile(r'User "([^"]*)"')


class Streak:
    """A run of failures: its count, when it began, its backoff, what it has logged."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        backoff: Backoff,
        host: str,
        namespace: str,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """No streak yet."""
        self._metrics, self._backoff = metrics, backoff
        self._host, self._namespace = host, namespace
        self._now = now
        self.failures = 0
        self._began: dt.datetime | None = None
        self._logged: set[ErrorKind] = set()

    @property
    def stale_since(self) -> dt.datetime | None:
        """Since when the page may be out of date (None while it is not)."""
        return self._began if self.failures >= STALE_AFTER_FAILURES else None

    def reached(self) -> None:
        """The API answered: the streak and its log lines are over."""
        if self.failures:
            log.info("api_reachable", after_failures=self.failures)
        self.failures = 0
        self._began = None
        self._logged.clear()
        self._metrics.watch_healthy.set(1)

    def healthy_period(self) -> None:
        """A watch was accepted and sent data: the next failure backs off from the start.

        client-go's Reflector, too, re-watches at once after an established watch breaks.
        """
        self._backoff.reset()

    def failed(self, error: ApiError, rule: Rule) -> float:
        """Count a failure of the streak and log it as its rule says; the seconds to wait."""
        self.failures += 1
        self._metrics.errors.labels(error.kind).inc()
        self._metrics.watch_healthy.set(0)
        if self._began is None:
            self._began = self._now()
        delay = self._backoff.failure(at_least=error.retry_after)
        self._metrics.backoff_seconds.inc(delay)
        if not (rule.once and error.kind in self._logged):
            self._logged.add(error.kind)
            self._log(error, rule, delay)
        return delay

    def _log(self, error: ApiError, rule: Rule, delay: float) -> None:
        where = {"verb": error.verb, "resource": error.resource, "namespace": self._namespace}
        if error.kind is ErrorKind.FORBIDDEN:
            match = _USER.search(str(error))
            log.error(
                "forbidden",
                service_account=match.group(1) if match else "unknown",
                **where,
                hint="grant get/list/watch on this resource to the ServiceAccount"
                " (Role + RoleBinding)",
                detail=str(error),
            )
            return
        getattr(log, rule.level)(
            "api_error",
            kind=error.kind,
            status=error.status or None,
            detail=str(error)[:300],
            retry_in=round(delay, 2),
            host=self._host,
            **where,
        )
