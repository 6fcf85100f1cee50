"""The list and watch requests for one Service's endpoints (client-go's ListerWatcher).

The client's ``Watch.stream`` neither lists nor recovers from 410, and its models cost ~10x
``json.loads`` per event: so two GETs, their raw JSON to ``stream``, every failure an
``ApiError`` naming verb and resource. ``interrupt()`` from another thread ends a read.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import TYPE_CHECKING

import urllib3

from sidecar.api.errors import ApiError, from_transport
from sidecar.api.stream import lines, list_page, read_body
from sidecar.metrics import Source
from sidecar.page.membership import SliceView, parse_as

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sidecar.api.connection import Connection

CONNECT_TIMEOUT = 10.0
# Slices per list page. A page is parsed whole, at ~6 times its size in memory: 20 slices of
# 100 endpoints with names as long as the API allows are ~2 MB (all 200 in one page took the
# sidecar past its 160 Mi); 10,000 endpoints are five requests.
LIST_PAGE_SIZE = 20
Param = str | int | bool | None
# Each source's path under a namespace, and its resource in RBAC's words.
_PATHS = {
    Source.ENDPOINT_SLICES: "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices",
    Source.ENDPOINTS: "/api/v1/namespaces/{}/endpoints",
}
RESOURCES = {
    Source.ENDPOINT_SLICES: "endpointslices.discovery.k8s.io",
    Source.ENDPOINTS: "endpoints",
}


class ListerWatcher:
    """Lists and watches the EndpointSlices (or v1 Endpoints) of one Service."""

    def __init__(
        self, *, connection: Connection, service: str, namespace: str, idle_timeout: float
    ) -> None:
        """Nothing is requested before the first list."""
        self._connection = connection
        self._service, self._namespace = service, namespace
        self._idle_timeout = idle_timeout
        self._response: urllib3.BaseHTTPResponse | None = None
        self._interrupted = False
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        """The API server the requests go to."""
        return self._connection.host

    def list(self, api: Source) -> Iterator[tuple[list[SliceView], str]]:
        """Every object of api, a page at a time, each with its page's resourceVersion."""
        continue_token: str | None = None
        parse = parse_as(api)
        while True:
            with self._request(api, "list", limit=LIST_PAGE_SIZE, continue_=continue_token) as (
                response
            ):
                items, version, continue_token = list_page(
                    read_body(response.stream(256 * 1024, decode_content=True))
                )
            yield [parse(item) for item in items], version
            if continue_token is None:
                return

    @contextlib.contextmanager
    def watch(
        self, api: Source, resource_version: str | None, timeout: int
    ) -> Iterator[Iterator[bytes]]:
        """The watch's lines, as they come, until the server ends the watch."""
        with self._request(
            api,
            "watch",
            watch=True,
            resourceVersion=resource_version,
            allowWatchBookmarks=True,
            # Random within [max/2, max], so that replicas do not all re-watch at once.
            timeoutSeconds=random.randint(timeout // 2, timeout),  # noqa: S311
        ) as response:
            yield lines(response.stream(None, decode_content=False))

    def reload_credentials(self) -> None:
        """Read the token (or kubeconfig) again before the next request."""
        self._connection.reload_credentials()

    def interrupt(self) -> None:
        """End a blocked read now, and any read started after (the loop is stopping)."""
        with self._lock:
            self._interrupted = True
            response = self._response
        if response is not None:
            _shutdown(response)

    @contextlib.contextmanager
    def _request(
        self, api: Source, verb: str, **params: Param
    ) -> Iterator[urllib3.BaseHTTPResponse]:
        """GET the Service's objects of api, held for interrupt() while the caller reads."""
        path, resource = _PATHS[api], RESOURCES[api]
        try:
            response = self._connection.get(
                path.format(self._namespace),
                self._query(api, params),
                (CONNECT_TIMEOUT, self._idle_timeout),
            )
            with self._held(response):
                yield response
        except ApiError as exc:
            exc.verb, exc.resource = verb, resource
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            error = from_transport(exc)
            error.verb, error.resource = verb, resource
            raise error from exc

    def _query(self, api: Source, params: dict[str, Param]) -> dict[str, str]:
        if api is Source.ENDPOINT_SLICES:
            # The EndpointSlice controller labels every slice of a Service with its name
            # (a DNS-1035 label, checked by the settings, so it cannot alter the selector).
            query = {"labelSelector": f"kubernetes.io/service-name={self._service}"}
        else:
            query = {"fieldSelector": f"metadata.name={self._service}"}
        for name, value in params.items():
            if value is not None:
                # continue is a Python keyword; booleans as the API spells them.
                key = name.rstrip("_")
                query[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return query

    @contextlib.contextmanager
    def _held(self, response: urllib3.BaseHTTPResponse) -> Iterator[None]:
        """While response is read, interrupt() can end it; its connection is released after."""
        # The flag and the response are both read and written under the lock, so an
        # interrupt() either sees the response or is seen here.
        with self._lock:
            self._response = response
            interrupted = self._interrupted
        if interrupted:
            _shutdown(response)
        try:
            yield
        finally:
            with self._lock:
                self._response = None
            if not response.closed:
                # Left before its end (a watch that ended on an ERROR event, an error, a
                # stop): bytes of it, such as the final chunk, may still come on this
                # connection, and the next request on it would read them as its status line.
                response.close()
            response.release_conn()


def _shutdown(response: urllib3.BaseHTTPResponse) -> None:
    """Close the socket under a read in another thread: the read raises at once."""
    with contextlib.suppress(Exception):
        response.shutdown()
