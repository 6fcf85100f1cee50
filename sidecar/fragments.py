"""The per-member pieces of the pages, built once per distinct member and reused.

A change moves one pod in or out of a list of thousands; re-escaping and re-encoding every
other member on every change was most of a write's cost (at 10,000 members: the HTML rows
~150 ms through Jinja, index.json's members ~10 ms through json). A member is immutable, so
its row and its JSON object can be kept with it (see Fragments for the key): a render looks
each one up, builds only the new ones, and keeps only what it used (no growth over time).
The "Recent changes" rows are kept the same way: through the sandbox, the 20 entries' dozen
fields each were most of a render at 10 members (~1 ms of ~1.5 ms).

``Fragments()`` fresh is the full render; the same object across renders is the
incremental one. tests/test_fragments.py proves both give the same bytes, over random
change sequences, and that the rows equal what the Jinja markup they replace produces.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeRow:
    """One entry of ``changes`` as a template sees it: index.json's fields as attributes.

    Jinja resolves ``change.at`` with getattr first; on a dict every lookup of every field
    of every change raised and caught an AttributeError in the sandbox (the same reason
    members are Member objects). ``change["at"]`` still works: Jinja falls back to the
    attribute.
    """

    at: str
    added: list[str]
    removed: list[str]
    added_count: int
    removed_count: int

    def key(self) -> tuple[object, ...]:
        """Its value, hashable: the template gets new ChangeRow objects for every render."""
        return (
            self.at,
            tuple(self.added),
            tuple(self.removed),
            self.added_count,
            self.removed_count,
        )


def _pods(count: int) -> str:
    return f"{count} pod" if count == 1 else f"{count} pods"


def change_row(change: ChangeRow) -> str:
    """One <li> of the packaged page's "Recent changes", escaped as the Jinja loop was."""
    delta = []
    if change.added_count:
        delta.append(f'<span class="plus">+{escape(_pods(change.added_count))}</span>')
    if change.removed_count:
        delta.append(f'<span class="minus">&minus;{escape(_pods(change.removed_count))}</span>')
    who = str(escape(", ".join(change.added)))
    if change.added and change.removed:
        who += "; "
    if change.removed:
        who += f"gone: {escape(', '.join(change.removed))}"
    unnamed = change.added_count + change.removed_count - len(change.added) - len(change.removed)
    if unnamed > 0:
        who += f" and {unnamed} more"
    at = escape(change.at)
    return (
        f'\n<li><time datetime="{at}">{at}</time> <span class="delta">{" ".join(delta)}</span>'
        f'\n<span class="who">{who}</span></li>'
    )


def member_fields(member: Member) -> dict[str, str]:
    """One member as index.json holds it."""
    return {"address": member.address, "pod": member.pod, "node": member.node, "zone": member.zone}


def member_json(member: Member) -> str:
    """One member as index.json holds it, encoded as json.dumps would."""
    return json.dumps(member_fields(member), ensure_ascii=False)


class Fragments:
    """The last render's member rows and JSON pieces and history rows, kept for the next.

    Members are keyed by the Member object's identity, not its value: a slice that did not change
    hands over the very same Member objects, and hashing a dataclass of four strings per
    lookup was half the cost at 10,000 members. Each entry holds its Member, so the id
    cannot be reused by another object while the entry exists; a hit is checked with ``is``.
    """

    def __init__(self) -> None:
        """Start empty: the first render builds every piece."""
        self._rows: dict[int, tuple[Member, str]] = {}
        self._json: dict[int, tuple[Member, str, str]] = {}
        self._next_rows: dict[int, tuple[Member, str]] = {}
        self._next_json: dict[int, tuple[Member, str, str]] = {}
        self._changes: dict[tuple[object, ...], str] = {}
        self._next_changes: dict[tuple[object, ...], str] = {}

    def rows(self, members: Iterable[Member], self_ip: str) -> Markup:
        """The <li> rows of a list, each from the cache where the member is unchanged."""
        old, used = self._rows, self._next_rows
        parts = []
        for member in members:
            if member.address == self_ip:  # one per page: not worth a cache entry
                parts.append(member_row(member, is_self=True))
                continue
            key = id(member)
            entry = old.pop(key, None) or used.get(key)
            if entry is None or entry[0] is not member:
                entry = (member, member_row(member, is_self=False))
            used[key] = entry
            parts.append(entry[1])
        return Markup("".join(parts))  # noqa: S704 - every part is escaped by member_row

    def members_json(self, members: Iterable[Member]) -> tuple[str, str]:
        """JSON arrays of the members and of their addresses, as json.dumps encodes them."""
        old, used = self._json, self._next_json
        objects, addresses = [], []
        for member in members:
            key = id(member)
            entry = old.pop(key, None) or used.get(key)
            if entry is None or entry[0] is not member:
                address = json.dumps(member.address, ensure_ascii=False)
                entry = (member, member_json(member), address)
            used[key] = entry
            objects.append(entry[1])
            addresses.append(entry[2])
        return "[" + ", ".join(objects) + "]", "[" + ", ".join(addresses) + "]"

    def change_rows(self, changes: Iterable[ChangeRow]) -> Markup:
        """The <li> rows of the history, each from the cache where the entry is unchanged.

        Keyed by value: the entries reach the template as new objects each render (from
        index.json's dicts, which is also all that a template's child process is sent).
        """
        old, used = self._changes, self._next_changes
        parts = []
        for change in changes:
            key = change.key()
            row = old.pop(key, None) or used.get(key)
            if row is None:
                row = change_row(change)
            used[key] = row
            parts.append(row)
        return Markup("".join(parts))  # noqa: S704 - every part is escaped by change_row

    def finish(self) -> None:
        """End of a render: keep what it used, drop what it did not (pods that left)."""
        self._rows, self._next_rows = self._next_rows, {}
        self._json, self._next_json = self._next_json, {}
        self._changes, self._next_changes = self._next_changes, {}

    def __len__(self) -> int:
        """Pieces kept for the next render."""
        return len(self._rows) + len(self._json) + len(self._changes)
