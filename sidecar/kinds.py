"""The closed sets of names the sidecar reports: error kinds, watch restart reasons, sources.

Each is a metric label and a log field, so each is part of the public contract: a value
added here shows up in the metric's help text too (``metrics.py`` builds it from these), and
no code can report a name that is not here.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

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
    EXPIRED = "expired"  # 410: the resourceVersion is too old
    CONNECTION = "connection"  # the stream broke
    MALFORMED = "malformed"  # a response we could not use


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
