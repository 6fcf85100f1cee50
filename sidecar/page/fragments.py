"""The pages' pieces per member and per change, built once per distinct value and kept.

A change moves one pod in or out of a list of thousands; escaping and encoding every other
member again on every change was most of a write's cost: at 10,000 members the rows through
Jinja took ~150 ms, index.json's members ~10 ms through json, against ~15 ms for the whole
change with the pieces kept (measured: docs/benchmarks.md). Members and changes are values
(tuples), so each piece is kept under its value: a render looks each one up, builds only
the new ones, and keeps only what it used (no growth over time).

A fresh cache gives the full render; the same one across renders the incremental one.
tests/unit/page/test_fragments.py proves both give the same bytes over random change
sequences, and that the rows equal the Jinja markup they replace.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sidecar.page.member import Member

Key = TypeVar("Key")
Piece = TypeVar("Piece")

_SELF_BADGE = (
    '<span class="badges"><span class="badge" data-kind="served">served this page</span></span>'
)


def member_row(member: Member, *, is_self: bool = False) -> str:
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


def member_json(member: Member) -> tuple[str, str]:
    """One member as index.json holds it, and its address, each encoded as json.dumps does."""
    return json.dumps(member_fields(member), ensure_ascii=False), json.dumps(
        member.address, ensure_ascii=False
    )


class ChangeRow(NamedTuple):
    """One entry of ``changes`` as a template sees it: index.json's fields as attributes.

    Jinja resolves ``change.at`` with getattr first; on a dict every lookup raises and
    catches an AttributeError (the same reason members are Member tuples). A value, so that
    its row is kept between renders under it; ``change["at"]`` works too.
    """

    at: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    added_count: int
    removed_count: int


class Kept(Generic[Key, Piece]):
    """Pieces of the last render by key: a render takes what it finds, finish() drops the rest."""

    def __init__(self) -> None:
        """Empty: the first render builds every piece."""
        self._kept: dict[Key, Piece] = {}
        self._used: dict[Key, Piece] = {}

    def finish(self) -> None:
        """End of a render: keep what it used, drop what it did not (pods that left)."""
        self._kept, self._used = self._used, {}

    def __len__(self) -> int:
        """Pieces kept for the next render."""
        return len(self._kept)


class Rows(Kept["Member", str]):
    """The packaged page's <li> rows of members."""

    def join(self, members: Iterable[Member], self_ip: str) -> Markup:
        """The rows of a list, each kept from the last render where the member is unchanged."""
        kept, used = self._kept, self._used
        parts = []
        for member in members:
            if member.address == self_ip:  # one per page: not worth keeping
                parts.append(member_row(member, is_self=True))
                continue
            row = used.get(member)
            if row is None:
                row = kept.pop(member, None) or member_row(member)
                used[member] = row
            parts.append(row)
        return Markup("".join(parts))  # noqa: S704 - every part is escaped by member_row


class ChangeRows(Kept["ChangeRow", str]):
    """The packaged page's <li> rows of "Recent changes"."""

    def join(self, changes: Iterable[ChangeRow]) -> Markup:
        """The rows of the history, each kept from the last render where it is unchanged."""
        kept, used = self._kept, self._used
        parts = []
        for change in changes:
            row = used.get(change)
            if row is None:
                row = kept.pop(change, None) or change_row(change)
                used[change] = row
            parts.append(row)
        return Markup("".join(parts))  # noqa: S704 - every part is escaped by change_row


class JsonMembers(Kept["Member", tuple[str, str]]):
    """index.json's member objects and addresses."""

    def arrays(self, members: Iterable[Member]) -> tuple[str, str]:
        """JSON arrays of the members and of their addresses, as json.dumps encodes them."""
        kept, used = self._kept, self._used
        objects, addresses = [], []
        for member in members:
            pair = used.get(member)
            if pair is None:
                pair = kept.pop(member, None) or member_json(member)
                used[member] = pair
            objects.append(pair[0])
            addresses.append(pair[1])
        return "[" + ", ".join(objects) + "]", "[" + ", ".join(addresses) + "]"
