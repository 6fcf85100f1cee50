"""History: each change small and counted, the page's size bounded whatever the changes."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest

from sidecar.page.document import PageData
from sidecar.page.history import HISTORY_LENGTH, NAMED_ADDRESSES, Change, History, change_between
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from support.pages import files

MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def members(first: int, count: int, *, family: int) -> Membership:
    base = ipaddress.ip_address("10.0.0.0" if family == 4 else "fd00:1234:5678:9abc::")
    return Membership(
        ready=tuple(
            Member(str(base + first + i), pod=f"podlister-7f9c8d6b5-{first + i:05d}", node="n1")
            for i in range(count)
        )
    )


def test_a_change_names_a_few_addresses_and_counts_all() -> None:
    """Replacing 10,000 addresses names NAMED_ADDRESSES per direction and counts 10,000 each."""
    old, new = members(0, 10_000, family=4), members(20_000, 10_000, family=4)
    change = change_between(old.addresses, new.addresses, MOMENT)
    assert change is not None
    assert (change.added_count, change.removed_count) == (10_000, 10_000)
    assert len(change.added) == len(change.removed) == NAMED_ADDRESSES
    assert change.added[0] == "10.0.78.32"


def test_no_change_is_no_entry_and_history_is_capped() -> None:
    """The same ready set gives no entry; the history keeps the newest HISTORY_LENGTH first."""
    same = members(0, 3, family=4).addresses
    assert change_between(same, same, MOMENT) is None
    history = History(members(0, 1, family=4).addresses)
    for i in range(HISTORY_LENGTH + 5):
        history.note(members(i + 1, 1, family=4).addresses, MOMENT)
    assert len(history.entries) == HISTORY_LENGTH
    assert history.entries[0].added == ("10.0.0.25",)


@pytest.mark.parametrize("family", [4, 6])
def test_index_json_at_ten_thousand_stays_within_ten_percent(family: int) -> None:
    """At 10,000 endpoints, after 20 full replacements, index.json is at most 10 % larger than
    the same page without any history (it was 6.7 MiB over 1.07 MiB, IPv6 9.6 MiB).
    """
    current = members(0, 10_000, family=family)
    history = History(current.addresses)
    for step in range(1, HISTORY_LENGTH + 1):
        current = members(step * 10_000, 10_000, family=family)
        history.note(current.addresses, MOMENT)

    def size(changes: tuple[Change, ...]) -> int:
        page = PageData(
            service="podlister",
            namespace="podlister",
            membership=current,
            generated_at=MOMENT,
            changes=changes,
            stale_since=MOMENT,
        )
        return len(files(page)["index.json"])

    with_history, without = size(history.entries), size(())
    assert with_history <= 1.10 * without, (with_history, without)


def test_changes() -> None:
    """change_between names the ready addresses added and removed, in order."""
    change = change_between(("10.0.0.1", "10.0.0.2"), ("10.0.0.2", "10.0.0.3"), MOMENT)
    assert change is not None
    assert (change.added, change.removed) == (("10.0.0.3",), ("10.0.0.1",))


def test_the_first_list_after_a_first_start_is_no_change() -> None:
    """Without an earlier page, the first addresses noted are where the history begins."""
    history = History()
    assert history.note(("10.0.0.1",), MOMENT) is None
    assert history.entries == ()
    assert history.note(("10.0.0.1", "10.0.0.2"), MOMENT) is not None
