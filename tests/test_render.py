"""Rendering: the three outputs, escaping, and templates that fail with file and line."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import pytest

from sidecar.document import PageData, page_context
from sidecar.history import Change
from sidecar.membership import Member, Membership
from sidecar.render import render_files
from sidecar.sandbox import TemplateError, compile_template, load_template, packaged_template

if TYPE_CHECKING:
    from pathlib import Path

MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)


def data(*addresses: str, pod_ip: str = "", pod: str = "") -> PageData:
    return PageData(
        service="web",
        namespace="shop",
        membership=Membership(ready=tuple(Member(a, pod) for a in addresses)),
        generated_at=MOMENT,
        pod_name="web-0",
        pod_ip=pod_ip,
        changes=(
            Change(
                at=MOMENT,
                added=addresses,
                removed=(),
                added_count=len(addresses),
                removed_count=0,
            ),
        ),
    )


def test_json_and_txt_contract() -> None:
    """index.json has the documented keys; index.txt has one address per line."""
    files = render_files(data("10.0.0.1", "10.0.0.2"), packaged_template())
    document = json.loads(files["index.json"])
    assert document["service"] == "web"
    assert document["namespace"] == "shop"
    assert document["addresses"] == ["10.0.0.1", "10.0.0.2"]
    assert document["generated_at"] == "2026-01-02T03:04:05.678Z"
    assert document["served_by"] == {"pod_name": "web-0", "pod_ip": ""}
    assert document["changes"][0]["added"] == ["10.0.0.1", "10.0.0.2"]
    assert set(document) == {
        "service",
        "namespace",
        "addresses",
        "members",
        "terminating",
        "not_ready",
        "served_by",
        "generated_at",
        "source",
        "stale_since",
        "compact",
        "changes",
    }
    assert document["stale_since"] is None
    assert document["compact"] is False
    assert set(document["changes"][0]) == {
        "at",
        "added",
        "removed",
        "added_count",
        "removed_count",
    }
    assert files["index.txt"] == b"10.0.0.1\n10.0.0.2\n"


def test_zero_endpoints_is_an_explicit_state() -> None:
    """With nobody ready, the JSON says so, the text is empty and the page says so."""
    files = render_files(data(), packaged_template())
    assert json.loads(files["index.json"])["addresses"] == []
    assert files["index.txt"] == b""
    assert b"No ready pods" in files["index.html"]


def test_html_lists_every_address_and_marks_the_serving_pod() -> None:
    """The page shows each address and marks the one of the pod that served it."""
    html = render_files(data("10.0.0.1", "10.0.0.2", pod_ip="10.0.0.2"), packaged_template())[
        "index.html"
    ].decode()
    assert "10.0.0.1" in html
    assert html.count('aria-current="true"') == 1
    marked = html.split('aria-current="true"')[1].split("</li>")[0]
    assert "10.0.0.2" in marked
    assert "2026-01-02T03:04:05.678Z" in html


def test_html_escapes_names_from_the_api() -> None:
    """A pod or host name carrying HTML is escaped, not interpreted."""
    html = render_files(data("10.0.0.1", pod="<script>alert(1)</script>"), packaged_template())[
        "index.html"
    ]
    assert b"<script>alert(1)</script>" not in html
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A template that does not compile fails with its path and the line of the error."""
    (tmp_path / "index.html.j2").write_text("<p>\n{% for a in addresses %}\n{{ a }\n")
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_path)
    assert caught.value.file == str(tmp_path / "index.html.j2")
    assert caught.value.line == 3


def test_undefined_variable_fails_at_load_with_line(tmp_path: Path) -> None:
    """An undefined variable fails when the template is loaded, naming the line."""
    (tmp_path / "index.html.j2").write_text("<p>{{ service }}</p>\n\n{{ no_such_thing }}\n")
    with pytest.raises(TemplateError, match="no_such_thing") as caught:
        load_template(tmp_path)
    assert caught.value.line == 3


def test_undefined_attribute_inside_a_loop_fails_at_load() -> None:
    """A typo inside a loop is found at load time too: the check renders sample data."""
    with pytest.raises(TemplateError, match="adress"):
        compile_template("{% for m in members %}\n{{ m.adress }}\n{% endfor %}", "t.j2")


def test_override_and_fallback(tmp_path: Path) -> None:
    """A folder with index.html.j2 overrides the page; a folder without it uses the packaged one."""
    assert load_template(tmp_path).origin.startswith("<packaged>")
    (tmp_path / "index.html.j2").write_text("{{ addresses | join(',') }}")
    page = load_template(tmp_path)
    try:
        html = render_files(data("10.0.0.1", "10.0.0.2"), page)["index.html"]
    finally:
        page.close()
    assert html == b"10.0.0.1,10.0.0.2"


def test_runtime_render_failure_is_a_template_error() -> None:
    """A failure that only real data triggers is reported as TemplateError with the line."""
    page = compile_template("ok\n{{ 1 // (addresses | length - 2) }}", "t.j2")
    with pytest.raises(TemplateError) as caught:
        render_files(data("10.0.0.1", "10.0.0.2"), page)
    assert caught.value.line == 2


def test_context_is_json_serialisable() -> None:
    """The template context is exactly the JSON document."""
    context = page_context(data("10.0.0.1"))
    assert json.loads(json.dumps(context)) == context


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("<p>\n{{ cycler.__init__.__globals__.os.popen('id').read() }}", "sandbox"),
        ("<p>\n{{ members.__class__.__mro__ }}", "sandbox"),
        ("<p>\n{{ self.__init__.__globals__ }}", "sandbox"),
        ("<p>\n{% set _ = served_by.update({'pod_ip': 'x'}) %}", "update"),
    ],
)
def test_template_cannot_reach_outside_its_data(source: str, reason: str) -> None:
    """The sandbox refuses internals and mutation: such a template fails like an invalid one,
    with file, line and reason, and nothing runs.
    """
    with pytest.raises(TemplateError) as caught:
        compile_template(source, "/etc/podlister/page/index.html.j2")
    assert caught.value.file == "/etc/podlister/page/index.html.j2"
    assert caught.value.line == 2
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "source",
    [
        "{% for a in range(100000) %}{% for b in range(1000) %}0123456789{% endfor %}{% endfor %}",
        "{{ 'x' * 10**9 }}",
        "{{ 2 ** 100000000 }}",
    ],
)
def test_a_render_is_bounded_in_size(source: str) -> None:
    """A template whose page would exceed the size bound is rejected, not rendered."""
    with pytest.raises(TemplateError, match=r"larger than|exponent"):
        compile_template(source, "/t/index.html.j2")


def test_a_render_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A template that loops without output is stopped at the render deadline."""
    monkeypatch.setattr("sidecar.sandbox.MAX_RENDER_SECONDS", 0.2)
    source = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match=r"more than 0\.2 s of CPU"):
        compile_template(source, "/t/index.html.j2")
