"""The incremental renderer: kept per-member pieces give exactly the full render's bytes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sidecar.configmap.sandbox import compile_template
from sidecar.page.document import PageData, page_context, scalars, template_context
from sidecar.page.fragments import (
    Kept,
    PageRows,
    member_arrays,
    member_json,
    member_row,
    member_rows,
)
from sidecar.page.history import Change
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.render import PackagedPage, render_files
from support.pages import files

# The Jinja markup member_rows replaced (what the packaged template's loop rendered before):
# the Python rows must stay byte-equal to it, escaping included.
REFERENCE_ROWS = Path(__file__).with_name("reference_rows.j2")
# The same for change_rows and the "Recent changes" loop.
REFERENCE_CHANGES = Path(__file__).with_name("reference_changes.j2")
# Names as hostile as an API response can make them.
NAMES = ["", "web-0", "a<b>", 'q"uote', "amp&amp;", "it's", "ünï", "zone/1", "{{ x }}", "\u2028"]


def random_member(rng: random.Random, index: int) -> Member:
    return Member(
        address=f"10.{index // 250 % 250}.{index % 250}.{rng.randint(1, 9)}"
        if rng.random() < 0.8
        else f"fd00::{index:x}",
        pod=rng.choice(NAMES) + str(rng.randint(0, 3)) if rng.random() < 0.9 else "",
        node=rng.choice(NAMES),
        zone=rng.choice(NAMES),
    )


def random_data(rng: random.Random, ready: list[Member], others: list[Member]) -> PageData:
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randint(0, 10**6))
    cut = rng.randint(0, len(others))
    return PageData(
        service="web",
        namespace="default",
        membership=Membership(
            ready=tuple(ready), terminating=tuple(others[:cut]), not_ready=tuple(others[cut:])
        ),
        generated_at=moment,
        pod_name=rng.choice(NAMES),
        pod_ip=rng.choice([m.address for m in ready] or [""]),
        changes=(
            Change(at=moment, added=("10.0.0.1",), removed=(), added_count=3, removed_count=0),
        )
        * rng.randint(0, 2),
        stale_since=moment if rng.random() < 0.2 else None,
        compact=rng.random() < 0.1,
    )


@pytest.mark.parametrize("seed", range(5))
def test_incremental_render_equals_full_render(seed: int) -> None:
    """Over 150 random changes (pods added, removed, renamed, moved between lists, the serving
    pod switched), the renderer that keeps its pieces gives the same three files as one that
    starts afresh, and index.json is exactly json.dumps of the documented document.
    """
    rng = random.Random(seed)
    page, kept = PackagedPage(), Kept(member_json)
    ready = [random_member(rng, i) for i in range(60)]
    others = [random_member(rng, 1000 + i) for i in range(5)]
    for step in range(150):
        op = rng.randrange(5)
        if op == 0 and ready:
            ready.pop(rng.randrange(len(ready)))
        elif op == 1:
            ready.insert(rng.randrange(len(ready) + 1), random_member(rng, 2000 + step))
        elif op == 2 and ready:
            i = rng.randrange(len(ready))
            ready[i] = ready[i]._replace(pod=rng.choice(NAMES))
        elif op == 3 and ready:
            others.append(ready.pop(rng.randrange(len(ready))))
        elif others:
            ready.append(others.pop(rng.randrange(len(others))))
        data = random_data(rng, ready, others)
        incremental = render_files(data, page, kept)
        assert incremental == files(data), step
        expected = json.dumps(page_context(data), ensure_ascii=False) + "\n"
        assert incremental["index.json"].decode() == expected, step


def test_rows_equal_the_jinja_markup_they_replace() -> None:
    """member_rows gives, byte for byte, what the Jinja loop gave, hostile names included."""
    rng = random.Random(7)
    members = tuple(random_member(rng, i) for i in range(300))
    environment = ImmutableSandboxedEnvironment(autoescape=True)
    reference = environment.from_string(REFERENCE_ROWS.read_text(encoding="utf-8").rstrip("\n"))
    for self_ip in ("", members[0].address, members[150].address):
        assert str(member_rows(Kept(member_row), members, self_ip)) == reference.render(
            items=members, self_ip=self_ip
        )


def random_changes(rng: random.Random) -> tuple[Change, ...]:
    """Up to 20 entries: hostile names, counts beyond the named ones, either direction."""
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randint(0, 9))
    return tuple(
        Change(
            at=moment + dt.timedelta(milliseconds=rng.randint(0, 3)),
            added=tuple(rng.sample(NAMES, rng.randint(0, 3))),
            removed=tuple(rng.sample(NAMES, rng.randint(0, 3))),
            added_count=rng.randint(0, 12),
            removed_count=rng.randint(0, 12),
        )
        for _ in range(rng.randint(0, 20))
    )


def test_change_rows_equal_the_jinja_markup_they_replace() -> None:
    """change_rows gives, byte for byte, what the "Recent changes" loop gave, over random
    histories with hostile names, counts beyond the named ones and both directions, whether
    its rows are kept from earlier renders or built afresh.
    """
    rng = random.Random(5)
    environment = ImmutableSandboxedEnvironment(autoescape=True)
    reference = environment.from_string(REFERENCE_CHANGES.read_text(encoding="utf-8").rstrip("\n"))
    kept = PageRows()
    for _ in range(300):
        data = dataclasses.replace(random_data(rng, [], []), changes=random_changes(rng))
        context = template_context(data, scalars(data), kept)
        rows = context["changes"]
        expected = reference.render(changes=rows)
        assert "".join(kept.changes.take(rows)) == expected
        assert "".join(PageRows().changes.take(rows)) == expected
        kept.finish()


def test_only_the_pieces_of_the_last_render_are_kept() -> None:
    """Pieces of members that left are dropped: what is kept follows the page, never grows."""
    rng = random.Random(3)
    rows, pieces = Kept(member_row), Kept(member_json)
    for members in (
        [random_member(rng, i) for i in range(200)],
        [random_member(rng, 5000 + i) for i in range(10)],
    ):
        member_rows(rows, members, self_ip="")
        member_arrays(pieces, members)
        rows.finish()
        pieces.finish()
    assert len(rows) == len(pieces) == 10


def test_a_user_template_may_use_member_rows() -> None:
    """member_rows is a template helper like any variable: escaped rows, marked self."""
    page = compile_template("<ol>{{ member_rows(members) }}</ol>", "/t/index.html.j2")
    data = PageData(
        service="web",
        namespace="default",
        membership=Membership(ready=(Member("10.0.0.1", pod="<b>"),)),
        generated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        pod_ip="10.0.0.1",
    )
    html = page.render_html(data, scalars(data))
    assert html.startswith('<ol>\n<li class="self" aria-current="true"><code>10.0.0.1</code>')
    assert "<span>&lt;b&gt;</span>" in html


def test_changes_as_objects_render_as_the_dicts_did() -> None:
    """The template sees each change as an object (ChangeRow) for speed; a template's loop
    over them (the packaged page's former one) renders byte for byte as it did over
    index.json's change dicts, over random histories with hostile addresses, counts beyond
    the named ones, and both directions.
    """
    rng = random.Random(11)
    loop = compile_template(REFERENCE_CHANGES.read_text(encoding="utf-8"), "/t/index.html.j2")
    for _ in range(200):
        data = dataclasses.replace(
            random_data(rng, [random_member(rng, i) for i in range(5)], []),
            changes=random_changes(rng),
        )
        fields = scalars(data)
        as_objects = template_context(data, fields, PageRows())
        as_dicts = {**as_objects, "changes": fields["changes"]}
        assert loop.template.render(as_objects) == loop.template.render(as_dicts)
