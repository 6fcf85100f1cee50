"""API failures as types the watch loop can act on: relist, back off and retry, or skip.

Every failure of a list or a watch ends up as one of these, so nothing escapes the loop
unclassified (kopf's ``_cogs/clients/errors.py`` is the model).
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

import urllib3

from sidecar.kinds import ErrorKind, SkipReason

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kubernetes.client.exceptions import ApiException

# Longest Retry-After we take from a server; the backoff's own cap (30 s) still applies.
MAX_RETRY_AFTER = 300.0
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


class Expired(Exception):  # noqa: N818 - named after the API's reason, "Expired"
    """The resourceVersion is too old (410 Gone): relist."""


class WatchError(Exception):
    """A request failed; its ``kind`` drives the backoff, the log and the metric label."""

    def __init__(
        self, kind: ErrorKind, message: str, *, status: int = 0, retry_after: float = 0.0
    ) -> None:
        """Classify one failure."""
        self.kind, self.status, self.retry_after = kind, status, retry_after
        super().__init__(message)


class Malformed(WatchError):  # noqa: N818 - reads as what the data is, like Expired
    """The API sent data we cannot use: the state may be wrong, so relist after backoff."""

    def __init__(self, message: str, *, reason: SkipReason = SkipReason.MALFORMED) -> None:
        """A malformed response or event; reason is the skipped-events metric label."""
        self.reason = reason
        super().__init__(ErrorKind.MALFORMED, message)


def seconds(value: object) -> float:
    """A count of seconds from a header or a Status field, 0 when it is not one.

    Decimal ASCII only ("1.5" counts, "²" and "1e9" do not), at most MAX_RETRY_AFTER.
    """
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return 0.0
    return min(number, MAX_RETRY_AFTER) if math.isfinite(number) and number > 0 else 0.0


def _status(body: object) -> tuple[str, object]:
    """The message and the retryAfterSeconds of a Status body (text if it is not JSON)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        status = json.loads(text)
    except ValueError:
        return text[:300], None
    if not isinstance(status, dict):
        return text[:300], None
    details = status.get("details")
    retry = details.get("retryAfterSeconds") if isinstance(details, dict) else None
    return str(status.get("message", text))[:300], retry


def classify(exc: ApiException) -> WatchError | Expired:
    """Turn an HTTP error from the API into Expired or a WatchError of a known kind."""
    status = exc.status if isinstance(exc.status, int) else 0
    message, body_retry = _status(exc.body)
    if status == 410:  # noqa: PLR2004
        return Expired(message)
    kind = {
        401: ErrorKind.UNAUTHORIZED,
        403: ErrorKind.FORBIDDEN,
        404: ErrorKind.NOT_FOUND,
        429: ErrorKind.THROTTLED,
    }.get(status, ErrorKind.SERVER if status >= 500 else ErrorKind.CLIENT)  # noqa: PLR2004
    headers: Mapping[str, str] = exc.headers or {}
    retry_after = seconds(headers.get("Retry-After", "")) or seconds(body_retry)
    return WatchError(kind, message or str(exc.reason), status=status, retry_after=retry_after)


def status_event(status: Mapping[str, object]) -> WatchError | Expired:
    """The error an in-stream ERROR event stands for."""
    code = status.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else 0
    message = str(status.get("message", ""))[:300]
    if code == 410 or status.get("reason") in {"Expired", "Gone"}:  # noqa: PLR2004
        return Expired(message)
    details = status.get("details")
    retry = seconds(details.get("retryAfterSeconds")) if isinstance(details, dict) else 0.0
    return WatchError(
        ErrorKind.WATCH_ERROR, f"ERROR event: {code} {message}", status=code, retry_after=retry
    )


def is_timeout(exc: BaseException) -> bool:
    """True for a read that timed out (a silent stream), not for a refused connection."""
    seen: BaseException | None = exc
    while seen is not None:
        # urllib3 makes NewConnectionError a ConnectTimeoutError for compatibility.
        if isinstance(seen, urllib3.exceptions.NewConnectionError):
            return False
        if isinstance(seen, urllib3.exceptions.ReadTimeoutError | TimeoutError):
            return True
        seen = seen.__context__ or seen.__cause__
    return False
