"""The list and watch requests for one Service's endpoints, through the official client.

The official client's ``Watch.stream`` neither lists nor recovers from 410, and its model
deserialisation costs ~10x more per event than ``json.loads``; so this module makes the
list and watch GETs through the client's REST layer (``kube.Connection.get``) and hands
the raw JSON to ``stream``.
It is the watch loop's source (client-go's ``ListerWatcher``); the loop decides what to do
with what it gets. ``interrupt()`` from another thread ends a blocked read at once.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from sidecar.api_errors import Malformed, WatchError, classify
from sidecar.kinds import ErrorKind, Source
from sidecar.membership import SliceView, parse_as
from sidecar.stream import lines, list_page, read_body

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    import urllib3

    from sidecar.kube import Timeout

CONNECT_TIMEOUT = 10.0
LIST_PAGE_SIZE = 500
Param = str | int | bool | None
# Source -> (its path under a namespace, its resource name in RBAC's words).
_PATHS = {
    Source.ENDPOINT_SLICES: (
        "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices",
        "endpointslices.discovery.k8s.io",
    ),
    Source.ENDPOINTS: ("/api/v1/namespaces/{}/endpoints", "endpoints"),
}


class ListerWatcher:
    """Lists and watches EndpointSlices (or v1 Endpoints) of one Service."""

    def __init__(  # noqa: PLR0913 - keyword-only wiring
        self,
        *,
        get: Callable[[str, Mapping[str, str], Timeout], urllib3.BaseHTTPResponse],
        service: str,
        namespace: str,
        idle_timeout: float,
        on_forbidden: Callable[[WatchError, str, str], None],
        beat: Callable[[], None],
    ) -> None:
        """Nothing is requested before the first list()."""
        self._get, self._service, self._namespace = get, service, namespace
        self._idle_timeout = idle_timeout
        self._on_forbidden, self._beat = on_forbidden, beat
        self._response: urllib3.BaseHTTPResponse | None = None
        self._interrupted = False
        self._lock = threading.Lock()

    def list(self, api: Source, stopping: Callable[[], bool]) -> tuple[list[SliceView], str]:
        """Every object, page by page; the resourceVersion of the first page is the list's."""
        views: list[SliceView] = []
        continue_token: str | None = None
        version = ""
        parse = parse_as(api)
        while True:
            response = self._request(api, "list", limit=LIST_PAGE_SIZE, continue_=continue_token)
            with self._hold(response):
                items, page_version, continue_token = list_page(read_body(response))
            self._beat()
            version = version or page_version
            views.extend(parse(item) for item in items)
            if continue_token is None or stopping():
                if not version:
                    raise Malformed("list response without a resourceVersion")
                return views, version

    @contextlib.contextmanager
    def watch(self, api: Source, resource_version: str | None, timeout: int) -> Iterator[Any]:
        """The watch's lines, as they come, until the server ends the watch."""
        response = self._request(
            api,
            "watch",
            watch=True,
            resourceVersion=resource_version,
            allowWatchBookmarks=True,
            # Random within [max/2, max], so that replicas do not all re-watch at once.
            timeoutSeconds=random.randint(timeout // 2, timeout),  # noqa: S311
        )
        with self._hold(response):
            yield lines(response)

    def interrupt(self) -> None:
        """End a blocked read now, and any read started after (the loop is stopping)."""
        with self._lock:
            self._interrupted = True
            response = self._response
        if response is not None:
            _shutdown(response)

    @contextlib.contextmanager
    def _hold(self, response: urllib3.BaseHTTPResponse) -> Iterator[None]:
        """While reading response, interrupt() can end it; the connection is released after."""
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

    def _request(self, api: Source, verb: str, **params: Param) -> urllib3.BaseHTTPResponse:
        """GET the Service's objects of api; params in the API's own (camelCase) names."""
        path, resource = _PATHS[api]
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
        try:
            return self._get(
                path.format(self._namespace), query, (CONNECT_TIMEOUT, self._idle_timeout)
            )
        except ApiException as exc:
            error = classify(exc)
            if isinstance(error, WatchError) and error.kind is ErrorKind.FORBIDDEN:
                self._on_forbidden(error, verb, resource)
            raise error from exc


def _shutdown(response: urllib3.BaseHTTPResponse) -> None:
    """Close the socket under a read in another thread: the read raises at once."""
    with contextlib.suppress(Exception):
        response.shutdown()
