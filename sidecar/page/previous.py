"""The page an earlier run of this sidecar left in the output folder, read back at start.

A restarted sidecar finds its emptyDir as it left it: serving that page at once keeps the pod
in the Service while the API is unreachable, and its history goes on across the restart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from sidecar.metrics import Source
from sidecar.page.document import JSON_FILE
from sidecar.page.history import HISTORY_LENGTH, NAMED_ADDRESSES, Change
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.write import read_regular

if TYPE_CHECKING:
    from pathlib import Path

# Larger than any page we write (10,000 IPv6 members is ~1.6 MB): anything bigger is not ours.
MAX_PREVIOUS_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class PreviousPage:
    """What an earlier run published."""

    membership: Membership
    changes: tuple[Change, ...]
    source: Source
    objects: int = 1
    programming_latency: float | None = None


def _text(value: object, limit: int = 253) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _members(value: object) -> tuple[Member, ...]:
    if not isinstance(value, list):
        raise TypeError("members is not a list")
    return tuple(
        Member(
            address=_text(m.get("address")),
            pod=_text(m.get("pod")),
            node=_text(m.get("node")),
            zone=_text(m.get("zone")),
            serving=m.get("serving") is not False,  # absent from pages of earlier releases
        )
        for m in value
        if isinstance(m, dict) and _text(m.get("address"))
    )


def _time(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise TypeError("time is not a string")
    return dt.datetime.fromisoformat(value)


def _addresses(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else []
    return tuple(_text(a, 64) for a in items[:NAMED_ADDRESSES] if isinstance(a, str))


def _count(value: object, named: tuple[str, ...]) -> int:
    return value if isinstance(value, int) and value >= len(named) else len(named)


def _change(entry: object) -> Change:
    if not isinstance(entry, dict):
        raise TypeError("change is not an object")
    added, removed = _addresses(entry.get("added")), _addresses(entry.get("removed"))
    return Change(
        at=_time(entry.get("at")),
        added=added,
        removed=removed,
        added_count=_count(entry.get("added_count"), added),
        removed_count=_count(entry.get("removed_count"), removed),
    )


def parse_previous(document: Any, *, service: str, namespace: str) -> PreviousPage | None:  # noqa: ANN401 - any JSON
    """The page in an index.json document, or None when it is not this Service's page."""
    if not isinstance(document, dict):
        return None
    if document.get("service") != service or document.get("namespace") != namespace:
        return None
    try:
        membership = Membership(
            ready=_members(document.get("members")),
            terminating=_members(document.get("terminating")),
            not_ready=_members(document.get("not_ready")),
        )
        history = document.get("changes")
        changes = tuple(_change(c) for c in (history if isinstance(history, list) else []))
    except (TypeError, ValueError):
        return None
    source, objects = document.get("source"), document.get("objects")
    latency = document.get("programming_latency_ms")
    return PreviousPage(
        membership=membership,
        changes=changes[:HISTORY_LENGTH],
        source=Source(source) if source in set(Source) else Source.ENDPOINT_SLICES,
        objects=objects if isinstance(objects, int) and objects >= 0 else 1,
        programming_latency=latency / 1000 if type(latency) is int and latency >= 0 else None,
    )


def read_previous(output_dir: Path, *, service: str, namespace: str) -> PreviousPage | None:
    """The page an earlier run left in output_dir for this Service, or None."""
    data = read_regular(output_dir / JSON_FILE, MAX_PREVIOUS_BYTES)
    if data is None:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None
    return parse_previous(document, service=service, namespace=namespace)
