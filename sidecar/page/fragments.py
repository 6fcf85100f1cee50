"""The pages' pieces per member and per change, built once per distinct value and kept.

A change moves one pod in a list of thousands; escaping and encoding every other member again
was most of a write: at 10,000 members 57.0 ms of CPU per change, 9.3 ms with the pieces kept
(docs/benchmarks.md). Members and changes are tuples, so each piece is kept under its value; a
render builds only new ones and keeps only what it used. tests/unit/page/test_fragments.py
holds a kept render byte-equal to a fresh one over random change sequences, and the rows equal
to the Jinja markup they replace.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from sidecar.page.member import Member

Key = TypeVar("Key")
Piece = TypeVar("Piece")

_SERVED = '<span class="badge" data-kind="served">served this page</span>'
_SERVING = '<span class="badge" data-kind="serving">still serving</span>'


def member_row(member: Member, *, is_self: bool = False, terminating: bool = False) -> str:
    """One <li> of the packaged page's lists (escaped: names come from the API)."""
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
    badges = (_SERVED if is_self else "") + (_SERVING if terminating and member.serving else "")
    if badges:
        badges = f'<span class="badges">{badges}</span>'
    return f"\n<li{attributes}><code>{escape(member.address)}</code>{meta}{badges}</li>"


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


def member_fields(member: Member) -> dict[str, str | bool]:
    """One member as index.json holds it."""
    return {
        "address": member.address,
        "pod": member.pod,
        "node": member.node,
        "zone": member.zone,
        "serving": member.serving,
    }


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

    def __init__(self, build: Callable[[Key], Piece]) -> None:
        """Empty: the first render builds every piece with build."""
        self._build = build
        self._kept: dict[Key, Piece] = {}
        self._used: dict[Key, Piece] = {}

    def take(self, keys: Iterable[Key]) -> list[Piece]:
        """The piece of each key, kept from the last render or built (one loop: 10,000 keys)."""
        kept, used, build = self._kept, self._used, self._build
        pieces = []
        for key in keys:
            piece = used.get(key)
            if piece is None:
                piece = used[key] = kept.pop(key, None) or build(key)
            pieces.append(piece)
        return pieces

    def finish(self) -> None:
        """End of a render: keep what it used, drop what it did not (pods that left)."""
        self._kept, self._used = self._used, {}

    def __len__(self) -> int:
        """Pieces kept for the next render."""
        return len(self._kept)


def member_rows(
    kept: Kept[Member, str], members: Sequence[Member], self_ip: str, *, terminating: bool = False
) -> Markup:
    """The <li> rows of a list, this pod's marked (escaped by member_row)."""
    rows = kept.take(members)
    if self_ip:
        for index, member in enumerate(members):
            if member.address == self_ip:  # one per page: not worth keeping
                rows[index] = member_row(member, is_self=True, terminating=terminating)
    return Markup("".join(rows))  # noqa: S704 - every part is escaped by member_row


class PageRows:
    """A page's <li> rows kept between renders: members, terminating members, changes."""

    def __init__(self) -> None:
        """Nothing kept yet."""
        self.members: Kept[Member, str] = Kept(member_row)
        self.terminating: Kept[Member, str] = Kept(functools.partial(member_row, terminating=True))
        self.changes: Kept[ChangeRow, str] = Kept(change_row)

    def finish(self) -> None:
        """End of a render (see Kept.finish)."""
        for kept in (self.members, self.terminating, self.changes):
            kept.finish()


def member_arrays(
    kept: Kept[Member, tuple[str, str]], members: Iterable[Member]
) -> tuple[str, str]:
    """JSON arrays of the members and of their addresses, as json.dumps encodes them."""
    pairs = kept.take(members)
    objects = ", ".join([pair[0] for pair in pairs])
    return f"[{objects}]", "[" + ", ".join([pair[1] for pair in pairs]) + "]"
