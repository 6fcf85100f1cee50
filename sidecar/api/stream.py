"""Reading the API's raw responses: watch lines and list bodies, each capped in size.

Pure, so fuzzed without a server: any line gives an Event or raises Malformed, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from sidecar.api.errors import Malformed
from sidecar.metrics import SkipReason

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

# One watch event carries one EndpointSlice: at most 1,000 endpoints, a few hundred KB.
MAX_LINE_BYTES = 4 * 1024 * 1024
# One list page: LIST_PAGE_SIZE (20) slices of the largest the API allows (1,000 endpoints,
# longest names) are ~20 MB. A server that sends more is not one we can follow.
MAX_LIST_BYTES = 24 * 1024 * 1024
EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One watch event: its type and its object (a JSON object, not yet trusted)."""

    type: str
    object: dict[str, Any]


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """The JSON object in data; Malformed (naming what) for anything else, deep nesting too."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Malformed(f"{what} is not a JSON object")
    return document


def parse_event(line: bytes) -> Event:
    """Parse one watch line; raise Malformed for anything that is not an event we know."""
    event = _json_object(line, "watch line")
    kind, obj = event.get("type"), event.get("object")
    if not isinstance(kind, str):
        raise Malformed("event type is not a string")
    if kind not in EVENT_TYPES:
        raise Malformed(f"unknown event type {kind[:40]!r}", reason=SkipReason.UNKNOWN_TYPE)
    if not isinstance(obj, dict):
        raise Malformed(f"{kind} event without an object")
    return Event(kind, obj)


def resource_version(obj: dict[str, Any]) -> str | None:
    """The object's metadata.resourceVersion when it is a non-empty string."""
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) and version else None


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a chunked watch stream into lines; a chunk may hold many events or part of one.

    Linear in the stream's length: each byte is searched for a newline once (the search
    resumes where the last one ended) and copied into its line once.
    """
    pending = bytearray()
    for chunk in chunks:
        searched = len(pending)
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", searched)) >= 0:
            if end - start > MAX_LINE_BYTES:
                raise Malformed(f"a watch line longer than {MAX_LINE_BYTES} bytes")
            line = bytes(pending[start:end])
            if line.strip():
                yield line
            start = searched = end + 1
        del pending[:start]
        if len(pending) > MAX_LINE_BYTES:
            raise Malformed(f"a watch line longer than {MAX_LINE_BYTES} bytes")
    if pending.strip():
        yield bytes(pending)


def read_body(chunks: Iterable[bytes]) -> bytes:
    """The whole body of a list response, refusing one larger than MAX_LIST_BYTES."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_LIST_BYTES:
            raise Malformed(f"a list response larger than {MAX_LIST_BYTES} bytes")
        parts.append(chunk)
    return b"".join(parts)


def list_page(body: bytes) -> tuple[list[dict[str, Any]], str, str | None]:
    """Items, resourceVersion and continue token of one list page; Malformed if unusable."""
    document = _json_object(body, "list response")
    metadata, items = document.get("metadata"), document.get("items")
    if not isinstance(metadata, dict):
        raise Malformed("list response without metadata")
    if items is None:
        items = []  # an empty list may come with "items": null
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise Malformed("list items are not a list of objects")
    version = metadata.get("resourceVersion")
    token = metadata.get("continue")
    return (
        items,
        version if isinstance(version, str) else "",
        token if isinstance(token, str) and token else None,
    )
