"""The one way the tests ask a server for a status code."""

from __future__ import annotations

import urllib.error
import urllib.request


def status(url: str, method: str = "GET", *, timeout: float = 5) -> int:
    """The HTTP status of one request (0 when nothing answers)."""
    request = urllib.request.Request(url, method=method)  # noqa: S310 - test servers on loopback
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
