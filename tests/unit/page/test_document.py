"""index.json: assembled from kept pieces, byte for byte its definition; the template's
variables are its names, members and changes as tuples.
"""

from __future__ import annotations

import datetime as dt
import json

from sidecar.page.document import (
    PageData,
    document,
    page_context,
    scalars,
    template_context,
    text,
    timestamp,
)
from sidecar.page.fragments import ChangeRow, Kept, PageRows, member_json
from sidecar.page.history import Change
from sidecar.page.member import Member
from sidecar.page.membership import Membership

MOMENT = dt.datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=dt.UTC)
DATA = PageData(
    service="web",
    namespace="shop",
    membership=Membership(
        ready=(Member("10.0.0.1", "a"), Member("fd00::1", "ü<b>")),
        terminating=(Member("10.0.0.9", "old"),),
    ),
    generated_at=MOMENT,
    pod_ip="10.0.0.1",
    changes=(Change(at=MOMENT, added=("10.0.0.1",), removed=(), added_count=1, removed_count=0),),
    stale_since=MOMENT,
)


def test_the_document_is_json_dumps_of_its_definition() -> None:
    """The bytes made from pieces are json.dumps(page_context(data)) with a final newline,
    non-ASCII names as they are; the text file is the ready addresses, one a line.
    """
    fields = scalars(DATA)
    assert (
        document(DATA, fields, Kept(member_json))
        == json.dumps(page_context(DATA), ensure_ascii=False) + "\n"
    )
    assert text(fields) == "10.0.0.1\nfd00::1\n"
    assert fields["stale_since"] == timestamp(MOMENT) == "2026-12-07T01:02:03.456Z"


def test_the_compact_page_keeps_every_address_and_nothing_else() -> None:
    """compacted(): the ready addresses without names, no other list, no history, marked."""
    compact = DATA.compacted()
    assert compact.membership == Membership(ready=(Member("10.0.0.1"), Member("fd00::1")))
    assert (compact.changes, compact.compact) == ((), True)


def test_a_templates_variables_are_the_documents_names() -> None:
    """The context holds index.json's keys; changes are ChangeRow tuples; member_rows marks
    this pod's row.
    """
    context = template_context(DATA, scalars(DATA), PageRows())
    assert set(page_context(DATA)) <= set(context)
    assert context["changes"] == (ChangeRow(timestamp(MOMENT), ("10.0.0.1",), (), 1, 0),)
    rows = str(context["member_rows"](context["members"]))
    assert rows.count('class="self"') == 1
    assert "&lt;b&gt;" in rows
