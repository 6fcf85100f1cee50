"""The watch's failure streak: what to log, when the page turns stale, how long to wait.

A streak starts at the first failed request and ends when the API answers again. The
tracker decides the backoff and the log lines of a streak and tells the page when it may be
out of date; the watch loop does the waiting (it owns the stop event).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

import structlog

from sidecar.kinds import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.api_errors import WatchError
    from sidecar.backoff import Backoff
    from sidecar.metrics import Metrics

log = structlog.get_logger("sidecar.watch")

# The page says the list may be out of date once a retry has failed too: one failure that
# the next attempt repairs (a reset connection) is not worth two rewrites of every page.
STALE_AFTER_FAILURES = 2
_USER = re.compile(r'User "([^"]*)"')


class FailureTracker:
    """Counts a streak of failures; each one's backoff, log line and metrics."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring of collaborators
        self,
        *,
        metrics: Metrics,
        backoff: Backoff,
        host: str,
        namespace: str,
        on_stale: Callable[[dt.datetime | None], None],
        on_unauthorized: Callable[[], None],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """No streak yet."""
        self._metrics, self._backoff = metrics, backoff
        self._host, self._namespace = host, namespace
        self._on_stale, self._on_unauthorized = on_stale, on_unauthorized
        self._now = now
        self.failures = 0
        self._trouble_since: dt.datetime | None = None
        self._logged: set[ErrorKind] = set()

    def reached(self) -> None:
        """The API answered: the streak, its logs and the stale page are over."""
        if self.failures:
            log.info("api_reachable", after_failures=self.failures)
        self.failures = 0
        self._logged.clear()
        self._metrics.watch_healthy.set(1)
        if self._trouble_since is not None:
            self._trouble_since = None
            self._on_stale(None)

    def healthy_period(self) -> None:
        """A watch was accepted and sent data: the next failure backs off from the start.

        client-go's Reflector, too, re-watches at once after an established watch breaks.
        """
        self._backoff.reset()

    def failed(self, error: WatchError) -> float:
        """Count a failure and log it (once per streak for some); the seconds to wait."""
        self.failures += 1
        self._metrics.errors.labels(error.kind).inc()
        self._metrics.watch_healthy.set(0)
        if self._trouble_since is None:
            self._trouble_since = self._now()
        if self.failures >= STALE_AFTER_FAILURES:
            self._on_stale(self._trouble_since)
        if error.kind is ErrorKind.UNAUTHORIZED:
            # A rotated token: read it again now, instead of waiting for the client's own
            # 60 s re-read timer; the first failure of a streak waits only the first step.
            self._on_unauthorized()
        delay = self._backoff.failure(at_least=error.retry_after)
        self._log(error, delay)
        self._metrics.backoff_seconds.inc(delay)
        return delay

    def forbidden(self, error: WatchError, *, verb: str, resource: str) -> None:
        """Log a 403 once per streak, with what to grant to whom."""
        if ErrorKind.FORBIDDEN in self._logged:
            return
        self._logged.add(ErrorKind.FORBIDDEN)
        match = _USER.search(str(error))
        log.error(
            "forbidden",
            service_account=match.group(1) if match else "unknown",
            verb=verb,
            resource=resource,
            namespace=self._namespace,
            hint="grant get/list/watch on this resource to the ServiceAccount (Role + RoleBinding)",
            detail=str(error),
        )

    def _log(self, error: WatchError, delay: float) -> None:
        if error.kind is ErrorKind.FORBIDDEN:
            return  # logged once for the streak already, with what to grant
        # Connection errors are logged at every retry (the retry delays are the story);
        # data problems once per streak, so a server sending garbage cannot flood the log.
        if error.kind is ErrorKind.MALFORMED and ErrorKind.MALFORMED in self._logged:
            return
        self._logged.add(error.kind)
        log.warning(
            "api_error",
            kind=error.kind,
            status=error.status or None,
            detail=str(error)[:300],
            retry_in=round(delay, 2),
            host=self._host,
        )
