"""Pure: the page's recent history of ready-set changes, small whatever the changes are."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sidecar.membership import changes

if TYPE_CHECKING:
    import datetime as dt

    from sidecar.membership import Membership

HISTORY_LENGTH = 20
# Addresses named per direction in one entry; the counts say the rest. A full replacement
# of 10,000 pods would otherwise put 20,000 addresses in every entry (6.7 MiB of index.json).
NAMED_ADDRESSES = 10


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One change of the ready set: when, how many in and out, and the first few of each."""

    at: dt.datetime
    added: tuple[str, ...]
    removed: tuple[str, ...]
    added_count: int
    removed_count: int


def change_between(old: Membership, new: Membership, at: dt.datetime) -> Change | None:
    """The entry for going from old to new, or None when the ready set is the same."""
    added, removed = changes(old, new)
    if not added and not removed:
        return None
    return Change(
        at=at,
        added=added[:NAMED_ADDRESSES],
        removed=removed[:NAMED_ADDRESSES],
        added_count=len(added),
        removed_count=len(removed),
    )


def with_change(history: tuple[Change, ...], change: Change | None) -> tuple[Change, ...]:
    """The history with change first (newest first), at most HISTORY_LENGTH entries."""
    if change is None:
        return history
    return (change, *history)[:HISTORY_LENGTH]


class History:
    """What the page showed last and the changes that led there (newest first).

    Starts from an earlier run's page when there is one, so the first list after a restart
    records what really changed; on a first start that first list is no change.
    """

    def __init__(self, shown: Membership | None = None, entries: tuple[Change, ...] = ()) -> None:
        """Begin from what an earlier page showed (or nothing)."""
        self._shown, self.entries = shown, entries

    def note(self, current: Membership, at: dt.datetime) -> Change | None:
        """Record that the page now shows current; the change it was, if any."""
        shown, self._shown = self._shown, current
        if shown is None:
            return None  # the first list after a first start is where we begin
        change = change_between(shown, current, at)
        self.entries = with_change(self.entries, change)
        return change
