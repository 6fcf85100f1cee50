"""A template of the user's own in Jinja's sandbox: what it may reach, the bounds of one render,
and errors that name the file and line (in-process: the child runs exactly this code).
"""

from __future__ import annotations

import datetime as dt

import pytest

from sidecar.configmap.sandbox import compile_template, sample_data
from sidecar.page.document import PageData, scalars
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.render import TemplateError

MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)


def data(*addresses: str) -> PageData:
    return PageData(
        service="web",
        namespace="shop",
        membership=Membership(ready=tuple(Member(a) for a in addresses)),
        generated_at=MOMENT,
    )


ORIGIN = "/etc/podlister/page/index.html.j2"


def test_syntax_error_names_file_and_line() -> None:
    """A template that does not compile fails with its path and the line of the error."""
    with pytest.raises(TemplateError) as caught:
        compile_template("<p>\n{% for a in addresses %}\n{{ a }\n", ORIGIN)
    assert caught.value.file == ORIGIN
    assert caught.value.line == 3


def test_undefined_variable_fails_at_load_with_line() -> None:
    """An undefined variable fails when the template is loaded, naming the line."""
    with pytest.raises(TemplateError, match="no_such_thing") as caught:
        compile_template("<p>{{ service }}</p>\n\n{{ no_such_thing }}\n", ORIGIN)
    assert caught.value.line == 3


def test_undefined_attribute_inside_a_loop_fails_at_load() -> None:
    """A typo inside a loop is found at load time too: the check renders sample data."""
    with pytest.raises(TemplateError, match="adress"):
        compile_template("{% for m in members %}\n{{ m.adress }}\n{% endfor %}", "t.j2")


def test_runtime_render_failure_is_a_template_error() -> None:
    """A failure that only real data triggers is reported as TemplateError with the line."""
    page = compile_template("ok\n{{ 1 // (addresses | length - 2) }}", "t.j2")
    with pytest.raises(TemplateError) as caught:
        page.render_html(data("10.0.0.1", "10.0.0.2"), scalars(data("10.0.0.1", "10.0.0.2")))
    assert caught.value.line == 2


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
    with pytest.raises(TemplateError, match=r"more than the folder takes|larger than|exponent"):
        compile_template(source, "/t/index.html.j2")


def test_the_bound_is_in_bytes_as_the_folder_holds_them() -> None:
    """Four million "€" are fewer characters than the bound but 12 MB of UTF-8: rejected in
    the render, before the page is sent anywhere; the same count of "e" renders.
    """
    with pytest.raises(TemplateError, match="more than the folder takes"):
        compile_template('{{ "€" * 4000000 }}', "/t/index.html.j2")
    assert compile_template('{{ "e" * 4000000 }}', "/t/index.html.j2").origin == "/t/index.html.j2"


def test_a_page_that_is_no_text_is_rejected_in_the_render() -> None:
    """A template that writes a lone surrogate (no file can hold it) is rejected as not text."""
    with pytest.raises(TemplateError, match="not text"):
        compile_template('{{ "\\ud800" | safe }}', "/t/index.html.j2")


def test_sample_data_walks_every_loop() -> None:
    """The data a template is tried on at load has an entry in every list it can loop over."""
    sample = sample_data()
    lists = sample.membership
    assert all((lists.ready, lists.terminating, lists.not_ready, sample.changes))
    assert sample.stale_since is not None
