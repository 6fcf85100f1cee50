"""The page's data and index.json's format: the file names, the document, its timestamps.

index.json is defined here once (``page_context``), built from kept pieces (``document``),
read back at start (``previous``); a template's variables are the same names.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from sidecar.metrics import Source
from sidecar.page.fragments import ChangeRow, member_arrays, member_fields, member_rows
from sidecar.page.member import Member
from sidecar.page.membership import Membership

if TYPE_CHECKING:
    from sidecar.page.fragments import Kept, PageRows
    from sidecar.page.history import Change

JSON_FILE = "index.json"
TEXT_FILE = "index.txt"
HTML_FILE = "index.html"
OUTPUT_NAMES = (JSON_FILE, TEXT_FILE, HTML_FILE)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PageData:
    """Everything a page shows; built by the publisher, rendered here."""

    service: str
    namespace: str
    membership: Membership
    generated_at: dt.datetime
    pod_name: str = ""
    pod_ip: str = ""
    source: Source = Source.ENDPOINT_SLICES
    changes: tuple[Change, ...] = ()
    stale_since: dt.datetime | None = None
    """Set while the API cannot be reached: since when the list may be out of date."""
    compact: bool = False
    """The folder is too small for the full page: members without detail, no history."""
    objects: int = 1
    """The Service's EndpointSlices (or Endpoints): none means no object names it (a typo?)."""
    programming_latency: float | None = None
    """Seconds from the latest change's trigger to this page (None: none since the start)."""

    def compacted(self) -> PageData:
        """The same list of addresses, without pod and node names and without history."""
        return dataclasses.replace(
            self,
            membership=Membership(ready=tuple(Member(m.address) for m in self.membership.ready)),
            changes=(),
            compact=True,
        )


def timestamp(moment: dt.datetime) -> str:
    """A moment as index.json writes it: ISO 8601 UTC to the millisecond, with Z."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _members(members: tuple[Member, ...]) -> list[dict[str, str | bool]]:
    return [member_fields(m) for m in members]


def scalars(data: PageData) -> dict[str, Any]:
    """index.json's fields other than the member lists, in the document's order."""
    return {
        "service": data.service,
        "namespace": data.namespace,
        "addresses": list(data.membership.addresses),
        "served_by": {"pod_name": data.pod_name, "pod_ip": data.pod_ip},
        "generated_at": timestamp(data.generated_at),
        "source": data.source,
        "stale_since": timestamp(data.stale_since) if data.stale_since else None,
        "compact": data.compact,
        "objects": data.objects,
        "programming_latency_ms": (
            None if data.programming_latency is None else round(data.programming_latency * 1000)
        ),
        "changes": [
            {
                "at": timestamp(c.at),
                "added": list(c.added),
                "removed": list(c.removed),
                "added_count": c.added_count,
                "removed_count": c.removed_count,
            }
            for c in data.changes
        ],
    }


def page_context(data: PageData, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document index.json holds, as one dict: its definition (``document`` is it)."""
    return {
        **(fields or scalars(data)),
        "members": _members(data.membership.ready),
        "terminating": _members(data.membership.terminating),
        "not_ready": _members(data.membership.not_ready),
    }


def template_context(data: PageData, fields: dict[str, Any], rows: PageRows) -> dict[str, Any]:
    """A template's variables: index.json's names, member_rows() and change_rows().

    The helpers give the packaged page's <li> rows, kept in ``rows`` between renders.
    Members and changes are tuples (Jinja looks ``x.address`` up with getattr first: on a
    dict every lookup raises and catches an AttributeError).
    """
    return {
        **fields,
        "changes": tuple(
            ChangeRow(
                c["at"],
                tuple(c["added"]),
                tuple(c["removed"]),
                c["added_count"],
                c["removed_count"],
            )
            for c in fields["changes"]
        ),
        "members": data.membership.ready,
        "terminating": data.membership.terminating,
        "not_ready": data.membership.not_ready,
        "member_rows": lambda members: _rows(rows, data, members),
        "change_rows": lambda changes: Markup("".join(rows.changes.take(changes))),  # noqa: S704 - escaped by change_row
    }


def _rows(rows: PageRows, data: PageData, members: tuple[Member, ...]) -> Markup:
    """A list's rows; the terminating list's say which still serve."""
    terminating = members is data.membership.terminating
    kept = rows.terminating if terminating else rows.members
    return member_rows(kept, members, data.pod_ip, terminating=terminating)


def document(data: PageData, fields: dict[str, Any], pieces: Kept[Member, tuple[str, str]]) -> str:
    """index.json, byte for byte json.dumps(page_context(data)) (no indent: the C encoder)."""
    members, addresses = member_arrays(pieces, data.membership.ready)
    lists = {
        "addresses": addresses,
        "members": members,
        "terminating": member_arrays(pieces, data.membership.terminating)[0],
        "not_ready": member_arrays(pieces, data.membership.not_ready)[0],
    }
    parts = []
    for key in (*fields, "members", "terminating", "not_ready"):
        value = lists.get(key)
        if value is None:
            value = json.dumps(fields[key], ensure_ascii=False)
        parts.append(f'"{key}": {value}')
    return "{" + ", ".join(parts) + "}\n"


def text(fields: dict[str, Any]) -> str:
    """index.txt: the ready addresses, one per line."""
    return "".join(f"{address}\n" for address in fields["addresses"])
