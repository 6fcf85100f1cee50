"""The template child's loop, in-process: compile, render, errors as answers, until EOF."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import TYPE_CHECKING, Any

from sidecar.configmap import child
from sidecar.configmap.child import answer
from sidecar.configmap.protocol import Pipe, render_request
from sidecar.page.document import PageData, scalars
from sidecar.page.member import Member
from sidecar.page.membership import Membership

if TYPE_CHECKING:
    import pytest

ORIGIN = "/etc/podlister/page/index.html.j2"


def frames(*objects: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(obj).encode() + b"\n" for obj in objects)


def data(*addresses: str) -> PageData:
    return PageData(
        service="web",
        namespace="shop",
        membership=Membership(ready=tuple(Member(a) for a in addresses)),
        generated_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )


def render(*addresses: str) -> dict[str, Any]:
    page = data(*addresses)
    return render_request(page, scalars(page))


def test_compile_then_render_until_the_parent_hangs_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compile, two renders: one answer each, in order, each within its own CPU bound (set
    here only as a record: this process is the test's); the end of stdin ends the loop.
    """
    limits: list[float] = []
    monkeypatch.setattr(child, "limit_cpu", limits.append)
    compile_request = {"op": "compile", "source": "{{ addresses|join(',') }}", "origin": ORIGIN}
    stdin = io.BytesIO(frames(compile_request, render("10.0.0.1"), render("10.0.0.1", "::1")))
    stdout = io.BytesIO()
    child.serve(Pipe(stdin, stdout))
    assert limits == [child.MAX_RENDER_SECONDS] * 3
    replies = Pipe(io.BytesIO(stdout.getvalue()), io.BytesIO())
    assert [replies.receive() for _ in range(3)] == [
        {"ok": True},
        {"html": "10.0.0.1"},
        {"html": "10.0.0.1,::1"},
    ]


def test_a_failing_template_is_an_answer_naming_file_and_line() -> None:
    """A template error (at compile or on real data) is answered with file, line and reason;
    a render before any compile is refused the same way.
    """
    template, reply = answer(None, render("10.0.0.1"))
    assert template is None
    assert reply["error"]["reason"] == "no template compiled"
    source = "ok\n{{ 1 // (addresses | length - 2) }}"
    template, reply = answer(None, {"op": "compile", "source": source, "origin": ORIGIN})
    assert reply == {"ok": True}
    _, reply = answer(template, render("10.0.0.1", "10.0.0.2"))
    assert (reply["error"]["file"], reply["error"]["line"]) == (ORIGIN, 2)
