"""The Prometheus metrics operators alert on, and the closed sets of names they are labelled by.

Each name set is a metric label and a log field, part of the public contract: a value added
here shows up in the metric's help text too, and no code can report a name not here.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

if TYPE_CHECKING:
    from collections.abc import Iterable


class ErrorKind(enum.StrEnum):
    """What went wrong (``podlister_errors_total{kind}``, the ``kind`` of error logs)."""

    CONNECTION = "connection"  # refused, reset, DNS: the API could not be reached
    IDLE = "idle"  # a watch stayed silent past its deadline
    SERVER = "server"  # 5xx
    THROTTLED = "throttled"  # 429
    FORBIDDEN = "forbidden"  # 403: RBAC
    UNAUTHORIZED = "unauthorized"  # 401: the token
    NOT_FOUND = "not_found"  # 404
    CLIENT = "client"  # any other 4xx
    WATCH_ERROR = "watch_error"  # an ERROR event inside a watch stream
    EMPTY_WATCH = "empty_watch"  # a watch that ended at once without any event
    MALFORMED = "malformed"  # the API sent something we cannot use: relist
    WRITE = "write"  # the pages could not be written
    WRITE_COMPACT = "write_compact"  # the full pages did not fit: the compact page was written
    RENDER_COMPACT = "render_compact"  # the page was too large to render: compact page instead
    TEMPLATE = "template"  # a template from the ConfigMap was rejected
    # 410 Gone: the resourceVersion is too old. Normal after etcd compaction: the loop
    # relists at once; never counted in podlister_errors_total (see api/policy.py).
    EXPIRED = "expired"


class RestartReason(enum.StrEnum):
    """Why a watch (re)started, unless an error ended the last one (then: its kind)."""

    INITIAL = "initial"  # the first list and watch of this process
    TIMEOUT = "timeout"  # the server closed the watch at its timeoutSeconds
    IDLE = "idle"  # no line for longer than the idle deadline
    RESYNC = "resync"  # the periodic relist
    MALFORMED = "malformed"  # a parser met data it did not foresee


class SkipReason(enum.StrEnum):
    """Why a watch line was skipped (``podlister_skipped_events_total{reason}``)."""

    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_OBJECT = "invalid_object"


class Source(enum.StrEnum):
    """Which API the membership came from (index.json's ``source``)."""

    ENDPOINT_SLICES = "endpointslices"
    ENDPOINTS = "endpoints"  # v1 Endpoints, only where discovery.k8s.io/v1 is not served


def listed(names: Iterable[enum.StrEnum]) -> str:
    """The values as a comma-separated list, for help texts."""
    return ", ".join(member.value for member in names)


class Metrics:
    """All metric objects of one sidecar, in a registry of its own; the names are a contract."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry."""
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: read from /proc at
        # each scrape, so a dashboard shows each replica against its limits without cAdvisor.
        ProcessCollector(registry=registry)

        def gauge(name: str, text: str, *labels: str) -> Gauge:
            return Gauge(name, text, labels, registry=registry)

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, labels, registry=registry)

        self.endpoints = gauge(
            "podlister_endpoints", "Addresses by state (ready, terminating, not_ready).", "state"
        )
        self.last_write = gauge(
            "podlister_last_write_timestamp_seconds",
            "Unix time of the last successful write of the pages (0 before the first).",
        )
        self.watch_restarts = counter(
            "podlister_watch_restarts",
            f"Watches (re)started, by reason: {listed(RestartReason)}, or the kind of the error"
            " that ended the last one (see podlister_errors).",
            "reason",
        )
        self.objects = gauge(
            "podlister_endpoint_objects",
            "The Service's EndpointSlices (or Endpoints) held: 0 while none names the Service.",
        )
        self.lists = counter("podlister_lists", f"Full lists, by API ({listed(Source)}).", "api")
        self.events = counter("podlister_watch_events", "Watch events received, by type.", "type")
        self.skipped_events = counter(
            "podlister_skipped_events", f"Watch lines skipped ({listed(SkipReason)}).", "reason"
        )
        counted = listed(kind for kind in ErrorKind if kind is not ErrorKind.EXPIRED)
        self.errors = counter("podlister_errors", f"Errors by kind ({counted}).", "kind")
        self.backoff_seconds = counter(
            "podlister_backoff_seconds", "Seconds spent waiting in backoff after errors."
        )
        self.writes = counter("podlister_writes", "Page sets written (unchanged files are not).")
        self.event_to_write = Histogram(
            "podlister_event_to_write_seconds",
            "From receiving a change from the API to the pages being on disk.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.programming = Histogram(
            "podlister_network_programming_duration_seconds",
            "From a change's trigger (the pod's Ready condition, whole seconds, as the"
            " EndpointSlice controller stamps it) to the pages on disk; as kube-proxy's.",
            buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=registry,
        )
        self.template_rejected = gauge(
            "podlister_template_rejected",
            "1 while the ConfigMap's template is rejected (the page keeps the last good one).",
        )
        self.ready = gauge("podlister_ready", "1 while /readyz answers 200.")
        self.watch_healthy = gauge("podlister_watch_healthy", "1 while the watch makes progress.")
