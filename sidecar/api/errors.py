"""Every way a list or a watch can fail, as one exception type with a kind.

An HTTP status, an ERROR event, a dropped connection, data we cannot use: each becomes an
``ApiError`` naming its kind, verb, resource and any wait the server asked for;
``policy.RULES`` says what the loop does about each kind (kopf's errors are the model).
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

import urllib3

from sidecar.metrics import ErrorKind, SkipReason

if TYPE_CHECKING:
    from collections.abc import Mapping

# Longest Retry-After we take from a server; the backoff's own cap (30 s) still applies.
MAX_RETRY_AFTER = 300.0
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")
_STATUS_KINDS = {
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    410: ErrorKind.EXPIRED,
    429: ErrorKind.THROTTLED,
}


class ApiError(Exception):
    """A request failed; ``kind`` picks what the watch loop does (policy.RULES)."""

    def __init__(  # noqa: PLR0913 - keyword-only details of one failure
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int = 0,
        retry_after: float = 0.0,
        verb: str = "",
        resource: str = "",
    ) -> None:
        """One failure; verb and resource may be filled in by the request that saw it."""
        self.kind, self.status, self.retry_after = kind, status, retry_after
        self.verb, self.resource = verb, resource
        super().__init__(message)


class Malformed(ApiError):  # noqa: N818 - reads as what the data is
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


def _status_body(body: object) -> tuple[str, object]:
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


def from_status(
    status: object, body: object, headers: Mapping[str, str] | None, reason: object = ""
) -> ApiError:
    """The error an HTTP answer outside 2xx stands for (status, Status body, headers)."""
    code = status if isinstance(status, int) and not isinstance(status, bool) else 0
    message, body_retry = _status_body(body)
    kind = _STATUS_KINDS.get(code, ErrorKind.SERVER if code >= 500 else ErrorKind.CLIENT)  # noqa: PLR2004
    retry_after = seconds((headers or {}).get("Retry-After", "")) or seconds(body_retry)
    return ApiError(kind, message or str(reason), status=code, retry_after=retry_after)


def from_event(status: Mapping[str, object]) -> ApiError:
    """The error an in-stream ERROR event stands for (its object is a Status)."""
    code = status.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else 0
    message = str(status.get("message", ""))[:300]
    if code == 410 or status.get("reason") in {"Expired", "Gone"}:  # noqa: PLR2004
        return ApiError(ErrorKind.EXPIRED, message, status=410)
    details = status.get("details")
    retry = seconds(details.get("retryAfterSeconds")) if isinstance(details, dict) else 0.0
    return ApiError(
        ErrorKind.WATCH_ERROR, f"ERROR event: {code} {message}", status=code, retry_after=retry
    )


def from_transport(exc: BaseException) -> ApiError:
    """The error a failed connection or read stands for: idle (a read timed out) or not."""
    kind = ErrorKind.IDLE if _is_timeout(exc) else ErrorKind.CONNECTION
    return ApiError(kind, f"{type(exc).__name__}: {exc}")


def _is_timeout(exc: BaseException) -> bool:
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
