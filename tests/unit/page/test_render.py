"""The packaged page's three files: the contract of index.json and .txt, the page, escaping."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from sidecar.page.document import PageData, page_context
from sidecar.page.history import Change
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.render import MAX_PAGE_BYTES, PackagedPage, TemplateError
from support.pages import files as render

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
    files = render(data("10.0.0.1", "10.0.0.2"))
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
        "programming_latency_ms",
        "compact",
        "objects",
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
    files = render(data())
    assert json.loads(files["index.json"])["addresses"] == []
    assert files["index.txt"] == b""
    assert b"No ready pods" in files["index.html"]


def test_html_lists_every_address_and_marks_the_serving_pod() -> None:
    """The page shows each address and marks the one of the pod that served it."""
    html = render(data("10.0.0.1", "10.0.0.2", pod_ip="10.0.0.2"))["index.html"].decode()
    assert "10.0.0.1" in html
    assert html.count('aria-current="true"') == 1
    marked = html.split('aria-current="true"')[1].split("</li>")[0]
    assert "10.0.0.2" in marked
    assert "2026-01-02T03:04:05.678Z" in html


def test_html_escapes_names_from_the_api() -> None:
    """A pod or host name carrying HTML is escaped, not interpreted."""
    html = render(data("10.0.0.1", pod="<script>alert(1)</script>"))["index.html"]
    assert b"<script>alert(1)</script>" not in html
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_context_is_json_serialisable() -> None:
    """The template context is exactly the JSON document."""
    context = page_context(data("10.0.0.1"))
    assert json.loads(json.dumps(context)) == context


def test_a_page_past_the_bound_is_a_template_error() -> None:
    """No page is larger than MAX_PAGE_BYTES (hostile names by the thousand): the packaged
    page's TemplateError makes the writer write the compact page.
    """
    name = "n" * 253  # as long as the API allows
    ready = tuple(Member(f"10.0.{i // 250}.{i % 250}", name, name, name) for i in range(7000))
    many = PageData(
        service="web", namespace="shop", membership=Membership(ready=ready), generated_at=MOMENT
    )
    with pytest.raises(TemplateError, match="more than the folder takes") as caught:
        render(many)
    assert caught.value.file == PackagedPage.origin
    assert len(render(many.compacted())["index.html"]) < MAX_PAGE_BYTES


def test_terminating_pods_that_still_serve_are_marked() -> None:
    """With no pod ready, the page says that traffic goes to the terminating pods that still
    serve, and marks each of them; one that no longer serves is not marked; index.json says
    which serve.
    """
    page = PageData(
        service="web",
        namespace="shop",
        membership=Membership(
            terminating=(
                Member("10.0.0.1", "web-a", serving=True),
                Member("10.0.0.2", "web-b", serving=False),
            )
        ),
        generated_at=MOMENT,
    )
    files = render(page)
    html = files["index.html"].decode()
    assert '<span id="serving-note">' in html
    rows = html.split('<ol id="terminating"')[1].split("</ol>")[0]
    assert rows.count("still serving") == 1
    assert "still serving" in rows.split("10.0.0.2")[0]
    serving = {m["address"]: m["serving"] for m in json.loads(files["index.json"])["terminating"]}
    assert serving == {"10.0.0.1": True, "10.0.0.2": False}


def test_a_service_without_any_endpoint_object_says_so() -> None:
    """No EndpointSlice names the Service (a typo in PODLISTER_SERVICE, most likely): the page
    says so, not "0 pods"; index.json's objects is 0.
    """
    page = PageData(
        service="podlistr",
        namespace="shop",
        membership=Membership(),
        generated_at=MOMENT,
        objects=0,
    )
    files = render(page)
    html = files["index.html"].decode()
    assert '<p id="no-objects" class="banner warn">' in html
    assert json.loads(files["index.json"])["objects"] == 0
    assert (
        '<p id="no-objects" class="banner warn" hidden>'
        in render(data("10.0.0.1"))["index.html"].decode()
    )


def test_the_page_says_how_long_the_latest_change_took() -> None:
    """With a programming latency the facts say it in seconds and index.json in ms; without
    one (no stamped change since the start) the fact is hidden and the key null.
    """
    timed = dataclasses.replace(data("10.0.0.1"), programming_latency=1.26)
    files = render(timed)
    assert json.loads(files["index.json"])["programming_latency_ms"] == 1260
    html = files["index.html"].decode()
    assert '<div id="programming-fact"><dt>Latest change</dt>' in html
    assert '<span id="programming">1.3</span> s' in html
    untimed = render(data("10.0.0.1"))
    assert json.loads(untimed["index.json"])["programming_latency_ms"] is None
    assert '<div id="programming-fact" hidden>' in untimed["index.html"].decode()
