"""Live reloads: a change in the template folder hands the new template on; the same text is
not handed twice; a broken one is logged and counted and the current one stays. The loading
itself (a child process) is replaced here by reading the file.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
import structlog

from sidecar.configmap import reload
from sidecar.health.state import HealthState
from sidecar.metrics import Metrics
from sidecar.page.render import TEMPLATE_NAME, TemplateError
from support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sidecar.page.render import PageTemplate


class Loaded:
    """A template as the loader gives it: its text; closed when dropped."""

    def __init__(self, source: str) -> None:
        self.source, self.origin, self.closed = source, "t", False

    def close(self) -> None:
        self.closed = True


def read(folder: Path, stopping: threading.Event | None = None) -> Loaded | None:  # noqa: ARG001
    """The loader, without a child: the file's text; "broken" in it is a template error."""
    path = folder / TEMPLATE_NAME
    if not path.exists():
        return None
    source = path.read_text()
    if "broken" in source:
        raise TemplateError(file=str(path), line=1, reason="broken")
    return Loaded(source)


class Sink:
    def __init__(self) -> None:
        self.handed: list[PageTemplate | None] = []
        self.changed = threading.Condition()

    def set_template(self, template: PageTemplate | None) -> None:
        with self.changed:
            self.handed.append(template)
            self.changed.notify_all()

    def wait_for(self, count: int) -> list[PageTemplate | None]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.handed) >= count, timeout=10)
            return list(self.handed)


@pytest.fixture
def watching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sink, Metrics]]:
    """watch_templates on tmp_path in a thread, with the file-reading loader; stopped after."""
    monkeypatch.setattr(reload, "load_template", read)
    sink, metrics, stop = Sink(), Metrics(), threading.Event()
    thread = threading.Thread(
        target=reload.watch_templates,
        kwargs={
            "template_dir": tmp_path,
            "sink": sink,
            "health": HealthState(stuck_after=60),
            "metrics": metrics,
            "stop_event": stop,
        },
    )
    thread.start()
    sink.wait_for(1)  # the first load: nothing there yet, the packaged page
    yield sink, metrics
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_each_new_text_is_handed_on_and_a_removed_file_is_the_packaged_page(
    tmp_path: Path, watching: tuple[Sink, Metrics]
) -> None:
    """The first load (an empty folder) hands on the packaged page (None); writing a template
    hands it on; the same text written again is handed on again (a template rejected on real
    data comes back); removing the file hands on None.
    """
    sink, _ = watching
    assert sink.handed == [None]
    (tmp_path / TEMPLATE_NAME).write_text("one")
    first = sink.wait_for(2)[1]
    assert first is not None
    assert first.source == "one"
    (tmp_path / TEMPLATE_NAME).write_text("one")
    again = sink.wait_for(3)[2]
    assert again is not None
    assert again.source == "one"
    (tmp_path / TEMPLATE_NAME).unlink()
    assert sink.wait_for(4)[3] is None


def test_a_broken_template_is_counted_and_the_current_one_stays(
    tmp_path: Path, watching: tuple[Sink, Metrics]
) -> None:
    """A broken template is logged and counted, nothing handed on, and the rejected gauge is
    1; the next good one is handed on and the gauge back to 0.
    """
    sink, metrics = watching
    with structlog.testing.capture_logs() as logs:
        (tmp_path / TEMPLATE_NAME).write_text("broken")
        wait_until(
            lambda: metrics.registry.get_sample_value(
                "podlister_errors_total", {"kind": "template"}
            ),
            timeout=10,
            what="the broken template counted",
        )
        assert metrics.registry.get_sample_value("podlister_template_rejected") == 1
        (tmp_path / TEMPLATE_NAME).write_text("good")
        good = sink.wait_for(2)[1]
    assert metrics.registry.get_sample_value("podlister_template_rejected") == 0
    assert good is not None
    assert good.source == "good"
    assert [line["keeping"] for line in logs if line["event"] == "template_invalid"] == [
        "<packaged>"
    ]


def test_a_broken_first_template_starts_the_packaged_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken template at start is counted and the packaged page handed on (None: the
    publisher's first page waits for this word); the watcher ends when told to.
    """
    (tmp_path / TEMPLATE_NAME).write_text("broken")
    monkeypatch.setattr(reload, "load_template", read)
    metrics, sink, stop = Metrics(), Sink(), threading.Event()
    stop.set()
    reload.watch_templates(
        template_dir=tmp_path,
        sink=sink,
        health=HealthState(stuck_after=60),
        metrics=metrics,
        stop_event=stop,
    )
    assert sink.handed == [None]
    assert metrics.registry.get_sample_value("podlister_errors_total", {"kind": "template"}) == 1


def test_a_template_named_as_the_page_is_pointed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with index.html but no index.html.j2 (a likely slip) is a warning naming
    both, and the packaged page.
    """
    (tmp_path / "index.html").write_text("<p>{{ service }}</p>")
    monkeypatch.setattr(reload, "load_template", read)
    stop, sink = threading.Event(), Sink()
    stop.set()
    with structlog.testing.capture_logs() as logs:
        reload.watch_templates(
            template_dir=tmp_path,
            sink=sink,
            health=HealthState(stuck_after=60),
            metrics=Metrics(),
            stop_event=stop,
        )
    [warning] = [line for line in logs if line["event"] == "template_not_used"]
    assert "index.html.j2" in warning["hint"]
    assert sink.handed == [None]
