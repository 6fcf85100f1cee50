"""The per-member pieces of the pages, built once per distinct member and reused.

A change moves one pod in or out of a list of thousands; re-escaping and re-encoding every
other member on every change was most of a write's cost (at 10,000 members: the HTML rows
~150 ms through Jinja, index.json's members ~10 ms through json). A member is an immutable
value, so its row and its JSON object can be kept under it as the key: a render looks each
one up, builds only the new ones, and keeps only what it used (no growth over time).

``Fragments()`` fresh is the full render; the same object across renders is the
incremental one. tests/test_fragments.py proves both give the same bytes, over random
change sequences, and that the rows equal what the Jinja markup they replace produces.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sidecar.membership import Member

_SELF_BADGE = (
    '<span class="badges"><span class="badge" data-kind="served">served this page</span></span>'
)


def member_row(member: Member, *, is_self: bool) -> str:
    """One <li> of the packaged page's member lists (escaped: names come from the API)."""
    details = [
        str(escape(text))
        for text in (
            member.pod,
            f"node {member.node}" if member.node else "",
            f"zone {member.zone}" if member.zone else "",
        )
        if text
    ]
    attributes = ' class="self" aria-current="true"' if is_self else ""
    meta = (
        '<span class="meta">' + "".join(f"<span>{d}</span>" for d in details) + "</span>"
        if details
        else ""
    )
    badge = _SELF_BADGE if is_self else ""
    return f"\n<li{attributes}><code>{escape(member.address)}</code>{meta}{badge}</li>"


def member_json(member: Member) -> str:
    """One member as index.json holds it, encoded as json.dumps would."""
    return json.dumps(
        {"address": member.address, "pod": member.pod, "node": member.node, "zone": member.zone},
        ensure_ascii=False,
    )


class Fragments:
    """Rows and JSON objects of the members of the last render, kept for the next."""

    def __init__(self) -> None:
        """Start empty: the first render builds every piece."""
        self._rows: dict[tuple[Member, bool], str] = {}
        self._objects: dict[Member, str] = {}
        self._addresses: dict[str, str] = {}
        self._next_rows: dict[tuple[Member, bool], str] = {}
        self._next_objects: dict[Member, str] = {}
        self._next_addresses: dict[str, str] = {}

    def rows(self, members: Iterable[Member], self_ip: str) -> Markup:
        """The <li> rows of a list, each from the cache where the member is unchanged."""
        old, used = self._rows, self._next_rows
        parts = []
        for member in members:
            key = (member, member.address == self_ip)
            row = used.get(key) or old.get(key)
            if row is None:
                row = member_row(member, is_self=key[1])
            used[key] = row
            parts.append(row)
        return Markup("".join(parts))  # noqa: S704 - every part is escaped by member_row

    def members_json(self, members: Iterable[Member]) -> str:
        """A JSON array of members, as json.dumps would encode it."""
        old, used = self._objects, self._next_objects
        parts = []
        for member in members:
            encoded = used.get(member) or old.get(member)
            if encoded is None:
                encoded = member_json(member)
            used[member] = encoded
            parts.append(encoded)
        return "[" + ", ".join(parts) + "]"

    def addresses_json(self, addresses: Iterable[str]) -> str:
        """A JSON array of addresses, as json.dumps would encode it."""
        old, used = self._addresses, self._next_addresses
        parts = []
        for address in addresses:
            encoded = used.get(address) or old.get(address)
            if encoded is None:
                encoded = json.dumps(address, ensure_ascii=False)
            used[address] = encoded
            parts.append(encoded)
        return "[" + ", ".join(parts) + "]"

    def finish(self) -> None:
        """End of a render: keep what it used, drop what it did not (pods that left)."""
        self._rows, self._next_rows = self._next_rows, {}
        self._objects, self._next_objects = self._next_objects, {}
        self._addresses, self._next_addresses = self._next_addresses, {}

    def __len__(self) -> int:
        """Pieces kept for the next render."""
        return len(self._rows) + len(self._objects) + len(self._addresses)
