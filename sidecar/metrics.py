"""The Prometheus metrics operators alert on, in a registry of their own (nothing global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidecar.kinds import ErrorKind, RestartReason, SkipReason, Source, listed


class Metrics:
    """All metric objects of one sidecar; the names are part of the public contract."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.endpoints = Gauge(
            "podlister_endpoints",
            "Addresses behind the Service by state (ready, terminating, not_ready).",
            ["state"],
            registry=r,
        )
        self.last_write = Gauge(
            "podlister_last_write_timestamp_seconds",
            "Unix time of the last successful write of the pages (0 before the first).",
            registry=r,
        )
        self.watch_restarts = Counter(
            "podlister_watch_restarts",
            f"Watches (re)started, by reason: {listed(RestartReason)}, or the kind of the error"
            " that ended the last one (see podlister_errors).",
            ["reason"],
            registry=r,
        )
        self.lists = Counter(
            "podlister_lists",
            f"Full lists of the Service's endpoints, by API ({listed(Source)}).",
            ["api"],
            registry=r,
        )
        self.events = Counter(
            "podlister_watch_events", "Watch events received, by type.", ["type"], registry=r
        )
        self.skipped_events = Counter(
            "podlister_skipped_events",
            f"Watch lines skipped, by reason ({listed(SkipReason)}).",
            ["reason"],
            registry=r,
        )
        self.errors = Counter(
            "podlister_errors",
            f"Errors by kind ({listed(k for k in ErrorKind if k is not ErrorKind.EXPIRED)}).",
            ["kind"],
            registry=r,
        )
        self.backoff_seconds = Counter(
            "podlister_backoff_seconds",
            "Seconds spent waiting in backoff after errors.",
            registry=r,
        )
        self.writes = Counter(
            "podlister_writes", "Page sets written (unchanged files are not rewritten).", registry=r
        )
        self.event_to_write = Histogram(
            "podlister_event_to_write_seconds",
            "From receiving a change from the API to the pages being on disk.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.ready = Gauge(
            "podlister_ready",
            "1 while /readyz answers 200: a page exists and the latest write succeeded.",
            registry=r,
        )
        self.watch_healthy = Gauge(
            "podlister_watch_healthy", "1 while the watch makes progress.", registry=r
        )
