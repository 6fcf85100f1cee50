"""Pure: the page's recent history of ready-set changes, small whatever the changes are."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

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


def change_between(old: tuple[str, ...], new: tuple[str, ...], at: dt.datetime) -> Change | None:
    """The entry for going from the old ready addresses to the new, None when they are equal.

    Both are sorted; so are the added and removed addresses named.
    """
    old_set, new_set = set(old), set(new)
    added = [a for a in new if a not in old_set]
    removed = [a for a in old if a not in new_set]
    if not added and not removed:
        return None
    return Change(
        at=at,
        added=tuple(added[:NAMED_ADDRESSES]),
        removed=tuple(removed[:NAMED_ADDRESSES]),
        added_count=len(added),
        removed_count=len(removed),
    )


class History:
    """The ready addresses the page showed last and the changes that led there (newest first).

    Starts from an earlier run's page when there is one, so the first list after a restart
    records what really changed; on a first start that first list is no change.
    """

    def __init__(
        self, shown: tuple[str, ...] | None = None, entries: tuple[Change, ...] = ()
    ) -> None:
        """Begin from what an earlier page showed (or nothing)."""
        self._shown, self.entries = shown, entries

    def note(self, ready: tuple[str, ...], at: dt.datetime) -> Change | None:
        """Record that the page now shows these ready addresses; the change it was, if any."""
        shown, self._shown = self._shown, ready
        if shown is None:
            return None  # the first list after a first start is where we begin
        change = change_between(shown, ready, at)
        if change is not None:
            self.entries = (change, *self.entries)[:HISTORY_LENGTH]
        return change
