"""A member is a value: equal fields, equal member and hash, whatever object holds them."""

from __future__ import annotations

from sidecar.page.member import Member


def test_members_are_values() -> None:
    """Two members with the same fields are equal and hash alike (the pages' pieces are kept
    under them); a member cannot be changed, only replaced.
    """
    first = Member("10.0.0.1", "web-0", "node-a", "zone-a")
    again = Member(address="10.0.0.1", pod="web-0", node="node-a", zone="zone-a")
    assert first == again
    assert hash(first) == hash(again)
    assert first._replace(pod="web-1") != first
    assert Member("10.0.0.1") == ("10.0.0.1", "", "", "", True)
