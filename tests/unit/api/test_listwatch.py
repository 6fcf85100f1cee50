"""The list and watch requests, on a connection that answers from a script (no server):
their paths and queries, pages followed, every failure an ApiError naming verb and resource.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import pytest
import urllib3

from kubestub import endpoint, endpoint_slice, endpoints_object
from sidecar.api.errors import ApiError
from sidecar.api.listwatch import LIST_PAGE_SIZE, ListerWatcher
from sidecar.metrics import ErrorKind, Source

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping


class Response:
    """The part of a urllib3 response the requests use, its body given in chunks."""

    def __init__(self, chunks: list[bytes | BaseException]) -> None:
        self.chunks = chunks
        self.closed = False
        self.released = self.shut = False

    def stream(self, _amount: int | None, *, decode_content: bool) -> Iterator[bytes]:
        del decode_content
        for chunk in self.chunks:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True

    def shutdown(self) -> None:
        self.shut = True


class Connection:
    """Answers each GET with the next scripted response (or raises it); records the GETs."""

    def __init__(self, *answers: Response | BaseException) -> None:
        self.answers = list(answers)
        self.gets: list[tuple[str, dict[str, str]]] = []
        self.reloads = 0

    host = "https://api.test"

    def get(self, path: str, query: Mapping[str, str], timeout: Any) -> Response:
        assert timeout
        self.gets.append((path, dict(query)))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def reload_credentials(self) -> None:
        self.reloads += 1


def source(connection: Connection) -> ListerWatcher:
    return ListerWatcher(
        connection=connection,  # type: ignore[arg-type]
        service="web",
        namespace="shop",
        idle_timeout=5.0,
    )


def page(items: list[dict[str, Any]], version: str, token: str = "") -> Response:
    metadata = {"resourceVersion": version, **({"continue": token} if token else {})}
    return Response([json.dumps({"metadata": metadata, "items": items}).encode()])


def test_a_list_follows_its_pages_with_the_services_selector() -> None:
    """The slices of the Service, by label, a page of LIST_PAGE_SIZE at a time, the continue
    token handed on; each page parsed, with its resourceVersion.
    """
    first = endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")])
    second = endpoint_slice("web-b", service="web", endpoints=[endpoint("10.0.0.2")])
    connection = Connection(page([first], "7", token="next"), page([second], "8"))
    pages = list(source(connection).list(Source.ENDPOINT_SLICES))
    assert [([v.name for v in views], version) for views, version in pages] == [
        (["web-a"], "7"),
        (["web-b"], "8"),
    ]
    (path, query), (_, query_2) = connection.gets
    assert path == "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
    assert query == {
        "labelSelector": "kubernetes.io/service-name=web",
        "limit": str(LIST_PAGE_SIZE),
    }
    assert query_2["continue"] == "next"


def test_endpoints_are_listed_by_the_services_name() -> None:
    """The v1 Endpoints fallback selects the object named after the Service."""
    connection = Connection(page([endpoints_object("web", ready=["10.0.0.9"])], "3"))
    [(views, _)] = source(connection).list(Source.ENDPOINTS)
    assert [e.member.address for e in views[0].endpoints] == ["10.0.0.9"]
    assert connection.gets[0] == (
        "/api/v1/namespaces/shop/endpoints",
        {"fieldSelector": "metadata.name=web", "limit": str(LIST_PAGE_SIZE)},
    )


def test_a_watch_asks_for_bookmarks_from_a_version_with_a_random_timeout() -> None:
    """The watch resumes at the resourceVersion given, with bookmarks, a server timeout in
    [max/2, max], and yields the stream's lines; the response is released after.
    """
    response = Response([b'{"type": "BOOKMARK"}\n{"ty', b'pe": "ADDED"}\n'])
    connection = Connection(response)
    with source(connection).watch(Source.ENDPOINT_SLICES, "42", 600) as stream:
        assert list(stream) == [b'{"type": "BOOKMARK"}', b'{"type": "ADDED"}']
    query = connection.gets[0][1]
    assert (query["watch"], query["resourceVersion"], query["allowWatchBookmarks"]) == (
        "true",
        "42",
        "true",
    )
    assert 300 <= int(query["timeoutSeconds"]) <= 600
    assert response.released


def test_failures_name_the_verb_and_the_resource() -> None:
    """An HTTP error from the connection and a stream that breaks mid-watch are ApiErrors
    naming the verb and the resource; the broken stream is closed, not handed back.
    """
    forbidden = ApiError(ErrorKind.FORBIDDEN, "no", status=403)
    with pytest.raises(ApiError) as listed:
        list(source(Connection(forbidden)).list(Source.ENDPOINT_SLICES))
    assert (listed.value.verb, listed.value.resource) == ("list", "endpointslices.discovery.k8s.io")
    broken = Response([b'{"type": "ADDED"}\n', urllib3.exceptions.ProtocolError("reset")])
    with (
        pytest.raises(ApiError) as watched,
        source(Connection(broken)).watch(Source.ENDPOINT_SLICES, "1", 10) as stream,
    ):
        list(stream)
    assert (watched.value.kind, watched.value.verb) == (ErrorKind.CONNECTION, "watch")
    assert broken.closed
    assert broken.released


def test_interrupt_shuts_the_read_in_progress_and_any_later_one() -> None:
    """interrupt() from another thread shuts down the response being read; a request made
    after it is shut at once.
    """
    held = Response([b"{}\n"])
    watcher = source(Connection(held, Response([b"{}\n"])))
    with watcher.watch(Source.ENDPOINT_SLICES, "1", 10):
        thread = threading.Thread(target=watcher.interrupt)
        thread.start()
        thread.join(timeout=5)
        assert held.shut
    later = Response([b"{}\n"])
    watcher._connection = Connection(later)  # type: ignore[assignment]
    with watcher.watch(Source.ENDPOINT_SLICES, "1", 10):
        assert later.shut


def test_credentials_are_read_again_on_the_connection() -> None:
    """reload_credentials() is the connection's: the loop asks the source after a 401."""
    connection = Connection()
    source(connection).reload_credentials()
    assert connection.reloads == 1
