"""A small JSON client for the real API server, for what tests set up and inspect.

The official client's models would do as well, but the tests only post, patch and read
plain objects, and an error should show the server's own message.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

MERGE_PATCH = "application/merge-patch+json"


class ApiError(RuntimeError):
    """The server refused a request; carries its status code and message."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        """Keep the status for tests that expect a refusal."""
        self.status = status
        super().__init__(f"{method} {path}: {status} {message}")


class Rest:
    """Requests to one API server with one bearer token, TLS checked against its CA."""

    def __init__(self, url: str, token: str, ca_file: Path) -> None:
        """Nothing is read or sent before the first request (the CA may not exist yet)."""
        self.url, self._token, self._ca_file = url, token, ca_file
        self._tls: ssl.SSLContext | None = None

    def text(self, path: str, *, timeout: float = 10) -> str:
        """GET a path that answers in plain text, such as /readyz."""
        return str(self.request("GET", path, timeout=timeout, decode=False))

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10,
        decode: bool = True,
    ) -> Any:
        """Send one request; the decoded JSON answer, or ApiError with the server's reason."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - https to the test's own server
            self.url + path, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=str(self._ca_file))
        try:
            with urllib.request.urlopen(  # noqa: S310 - see above
                request, timeout=timeout, context=self._tls
            ) as response:
                raw = response.read()
                return json.loads(raw or b"null") if decode else raw.decode()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("message", "")
            except ValueError:
                message = raw.decode(errors="replace")
            raise ApiError(method, path, exc.code, message) from None

    def get(self, path: str) -> Any:
        """GET path."""
        return self.request("GET", path)

    def post(self, path: str, body: object) -> Any:
        """POST body to path."""
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: object) -> Any:
        """PATCH path with a JSON merge patch."""
        return self.request("PATCH", path, body, content_type=MERGE_PATCH)

    def delete(self, path: str) -> Any:
        """DELETE path (no grace period: no kubelet waits for the containers)."""
        return self.request("DELETE", path, {"gracePeriodSeconds": 0})
