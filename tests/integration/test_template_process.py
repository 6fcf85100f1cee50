"""ConfigMap templates in a bounded child process: any template ends, within CPU and memory
bounds the kernel enforces, and fails like an invalid one (file, line or reason).
"""

from __future__ import annotations

import datetime as dt
import resource
import threading
from typing import TYPE_CHECKING

import pytest

from sidecar.configmap.child import MAX_RENDER_SECONDS, MEMORY_LIMIT
from sidecar.configmap.worker import IsolatedTemplate, Stopping, load_template
from sidecar.page.document import PageData
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.render import TemplateError
from support.pages import files as render_files

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ORIGIN = "/etc/podlister/page/index.html.j2"


def page_data(*addresses: str, service: str = "web") -> PageData:
    return PageData(
        service=service,
        namespace="default",
        membership=Membership(ready=tuple(Member(a, pod=f"pod-{a}") for a in addresses)),
        generated_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    )


@pytest.fixture
def isolated() -> Iterator[list[IsolatedTemplate]]:
    """Templates made in the test; every child process is ended after it."""
    made: list[IsolatedTemplate] = []
    yield made
    for template in made:
        template.close()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_renders_like_the_in_process_template(isolated: list[IsolatedTemplate]) -> None:
    """A ConfigMap template renders the same page in the child, change after change."""
    source = "{% for m in members %}{{ m.address }}={{ m.pod }};{% endfor %}{{ service }}"
    page = IsolatedTemplate(source, ORIGIN).compile()
    isolated.append(page)
    first = render_files(page_data("10.0.0.1"), page)["index.html"]
    second = render_files(page_data("10.0.0.1", "10.0.0.2"), page)["index.html"]
    assert first == b"10.0.0.1=pod-10.0.0.1;web"
    assert second == b"10.0.0.1=pod-10.0.0.1;10.0.0.2=pod-10.0.0.2;web"


@pytest.mark.timeout(60)
def test_a_loop_that_prints_nothing_is_stopped_by_cpu_time(
    isolated: list[IsolatedTemplate],
) -> None:
    """Nested loops over a 4 MB string emit nothing and call nothing, so no check in the
    sandbox ever runs: the kernel's CPU limit ends the child after about MAX_RENDER_SECONDS,
    and the template fails at load, naming its file.
    """
    source = '{% set s = "x"*4000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}'
    before = children_cpu()
    with pytest.raises(TemplateError, match="CPU time") as caught:
        isolated.append(IsolatedTemplate(source, ORIGIN).compile())
    assert caught.value.file == ORIGIN
    assert children_cpu() - before < MAX_RENDER_SECONDS + 3


@pytest.mark.parametrize(
    "source",
    [
        "{{ ('%0300000000d' % 1) | length }}",
        "{{ '{:>300000000}'.format('x') | length }}",
        "{{ 'x' | center(300000000) | length }}",
        "{% set s = 'x' * 4000000 %}{{ ([s] * 60) | join | length }}",
        "{% set s = 'x' * 4000000 %}{% set t = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}{{ t ~ t }}",
        "{% set s = 'x' * 4000000 %}{{ (s ~ s) | list | sort | length }}",
    ],
)
def test_memory_hungry_templates_are_refused(isolated: list[IsolatedTemplate], source: str) -> None:
    """Each of these takes hundreds of MiB (or seconds of CPU) to render; in the child they
    fail at MEMORY_LIMIT or at the CPU bound, and only the child pays.
    """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TemplateError, match=r"MiB|CPU|memory|killed|ended") as caught:
        isolated.append(IsolatedTemplate(source, ORIGIN).compile())
    assert caught.value.file == ORIGIN
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < MEMORY_LIMIT / 2**20 / 4, f"the test process grew {grown_mib:.0f} MiB"


@pytest.mark.timeout(60)
def test_a_template_that_only_spins_on_real_data_fails_at_render(
    isolated: list[IsolatedTemplate],
) -> None:
    """Behind ``{% if service != "sample" %}`` a spin passes the load check; the render on
    real data is stopped all the same, and the next render starts a fresh child.
    """
    source = (
        '{% if service != "sample" %}{% set s = "x"*4000000 %}'
        "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}{% endif %}ok"
    )
    page = IsolatedTemplate(source, ORIGIN).compile()
    isolated.append(page)
    with pytest.raises(TemplateError, match="CPU time"):
        render_files(page_data("10.0.0.1"), page)
    assert render_files(page_data("10.0.0.1", service="sample"), page)["index.html"] == b"ok"


def test_override_and_fallback(tmp_path: Path) -> None:
    """A folder with index.html.j2 gives the user's page; a folder without it gives none
    (the packaged page renders then).
    """
    assert load_template(tmp_path) is None
    (tmp_path / "index.html.j2").write_text("{{ addresses | join(',') }}")
    page = load_template(tmp_path)
    assert page is not None
    try:
        html = render_files(page_data("10.0.0.1", "10.0.0.2"), page)["index.html"]
    finally:
        page.close()
    assert html == b"10.0.0.1,10.0.0.2"


def test_a_compile_the_sidecar_stops_is_ended_at_once() -> None:
    """A compile that spins, asked while the sidecar is stopping: the child is ended at the
    first look (Stopping), long before its CPU bound would have ended it, and is reaped.
    """
    spin = '{% set s = "x"*4000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}'
    stopping = threading.Event()
    stopping.set()
    before = children_cpu()
    with pytest.raises(Stopping):
        IsolatedTemplate(spin, ORIGIN).compile(stopping)
    used = children_cpu() - before  # counted once the child is reaped
    assert 0 < used < MAX_RENDER_SECONDS
