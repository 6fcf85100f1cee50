"""The publisher in-process: real files in a temporary folder, its loop in a thread, the
clock it takes; snapshots made from real EndpointSlice objects.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kubestub import endpoint, endpoint_slice
from sidecar.config import load_settings
from sidecar.health.state import HealthState
from sidecar.metrics import Metrics, Source
from sidecar.page import write, writer
from sidecar.page.membership import Snapshot, slice_view
from sidecar.page.previous import PreviousPage, read_previous
from sidecar.page.publish import Publisher
from sidecar.page.render import PackagedPage, TemplateError
from sidecar.page.write import WriteError
from support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from sidecar.page.document import PageData

# The publisher's clock runs this far ahead of time.monotonic(): a latency measured on the
# wrong clock would be off by this much.
CLOCK_OFFSET = 10_000.0


class Running:
    """A publisher writing into folder, its loop in a thread until stop()."""

    def __init__(
        self,
        folder: Path,
        clock: Callable[[], float],
        previous: PreviousPage | None = None,
        template_dir: Path | None = None,
    ) -> None:
        """Start the loop; nothing is written before the first snapshot (or a change to
        the previous page).
        """
        environ = {"PODLISTER_SERVICE": "web", "PODLISTER_OUTPUT_DIR": str(folder)}
        if template_dir is not None:
            environ["PODLISTER_TEMPLATE_DIR"] = str(template_dir)
        settings = load_settings(
            environ,
            namespace_file=Path("/nonexistent"),
            stdout_is_tty=False,
        )
        self.folder, self.clock = folder, clock
        self.metrics = Metrics()
        self.health = HealthState(stuck_after=60, metrics=self.metrics)
        self.stop_event = threading.Event()
        self.publisher = Publisher(
            settings=settings,
            packaged=PackagedPage(),
            health=self.health,
            metrics=self.metrics,
            stop_event=self.stop_event,
            clock=clock,
            previous=previous,
        )
        self.thread = threading.Thread(target=self.publisher.run, name="publish")
        self.thread.start()

    def submit(self, *addresses: str, age: float = 0.0) -> None:
        """A snapshot of one slice holding addresses, received age seconds ago."""
        obj = endpoint_slice("web-a", service="web", endpoints=[endpoint(a) for a in addresses])
        self.publisher.submit(
            Snapshot(
                views=(slice_view(obj),),
                source=Source.ENDPOINT_SLICES,
                received_at=self.clock() - age,
            )
        )

    def writes(self) -> float:
        """Page sets written so far."""
        return self.metrics.registry.get_sample_value("podlister_writes_total") or 0.0

    def listed(self) -> list[str]:
        """index.txt's addresses (the test waits for the write before it reads)."""
        return (self.folder / "index.txt").read_text().split()

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        self.stop_event.set()
        self.publisher.stop()
        self.thread.join(timeout=10)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    """A publisher on a clock CLOCK_OFFSET ahead, writing into a fresh folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    publisher = Running(folder, lambda: time.monotonic() + CLOCK_OFFSET)
    yield publisher
    publisher.stop()


def test_a_snapshot_becomes_the_pages_and_the_latency_is_on_its_clock(running: Running) -> None:
    """A snapshot received 0.2 s ago (on the publisher's clock) is written as the three pages;
    the event-to-write latency, measured on that clock, is at least 0.2 s and small.
    """
    running.submit("10.0.0.2", "10.0.0.1", age=0.2)
    wait_until(lambda: running.writes() == 1, timeout=5, what="the first write")
    assert running.listed() == ["10.0.0.1", "10.0.0.2"]
    assert {p.name for p in running.folder.iterdir()} >= {"index.html", "index.json", "index.txt"}
    total = running.metrics.registry.get_sample_value("podlister_event_to_write_seconds_sum")
    assert total is not None
    assert 0.2 <= total < 5
    assert running.health.ready


def test_unchanged_state_is_not_rewritten_and_a_burst_is_coalesced(running: Running) -> None:
    """The same membership again writes nothing; a burst of changes ends in the last one,
    in fewer writes than changes.
    """
    running.submit("10.0.0.1")
    wait_until(lambda: running.writes() == 1, timeout=5, what="the first write")
    running.submit("10.0.0.1")
    for last in range(2, 40):
        running.submit("10.0.0.1", f"10.0.1.{last}")
    wait_until(
        lambda: running.listed() == ["10.0.0.1", "10.0.1.39"],
        timeout=5,
        what="the burst's last state",
    )
    assert running.writes() < 38


def test_an_asset_removed_or_replaced_is_written_again_with_the_next_page(
    running: Running,
) -> None:
    """page.css removed and page.js replaced by a file of the same size (new inode), then
    page.js edited in place (same inode and size, new mtime): each comes back with the next
    change; assets no one touched are left as they are (same inode).
    """
    running.submit("10.0.0.1")
    wait_until(lambda: running.writes() == 1, timeout=5, what="the first write")
    css, js = running.folder / "page.css", running.folder / "page.js"
    original_css, original_js = css.read_bytes(), js.read_bytes()
    css.unlink()
    js.unlink()
    js.write_bytes(b"x" * len(original_js))
    running.submit("10.0.0.2")
    wait_until(lambda: running.writes() == 2, timeout=5, what="the second write")
    assert (css.read_bytes(), js.read_bytes()) == (original_css, original_js)
    untouched = css.stat().st_ino
    with js.open("r+b") as edited:
        edited.write(b"y")
    os.utime(js, ns=(1, 1))
    running.submit("10.0.0.3")
    wait_until(lambda: running.writes() == 3, timeout=5, what="the third write")
    assert js.read_bytes() == original_js
    assert css.stat().st_ino == untouched


def test_stale_marks_the_page_and_clears_it(running: Running) -> None:
    """set_stale(since) rewrites index.json with stale_since; set_stale(None) clears it."""
    running.submit("10.0.0.1")
    wait_until(lambda: running.writes() == 1, timeout=5, what="the first write")
    since = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    running.publisher.set_stale(since)
    wait_until(lambda: running.writes() == 2, timeout=5, what="the stale write")
    assert (
        '"stale_since": "2026-11-30T12:00:00.000Z"' in (running.folder / "index.json").read_text()
    )
    running.publisher.set_stale(None)
    wait_until(lambda: running.writes() == 3, timeout=5, what="the fresh write")
    assert '"stale_since": null' in (running.folder / "index.json").read_text()


class FailsOnTwo:
    """A user's template that renders one address and fails on two (as the sandbox reports)."""

    origin = source = "test.j2"
    closed = False

    def render_html(self, data: PageData, fields: dict[str, Any]) -> str:  # noqa: ARG002
        if len(data.membership.ready) > 1:
            raise TemplateError(file=self.origin, line=1, reason="'undefined_name' is undefined")
        return "ok"

    def close(self) -> None:
        self.closed = True


def test_a_template_failing_on_real_data_falls_back_to_the_packaged_page(
    running: Running,
) -> None:
    """A template that renders the sample data but fails on this data is rejected: the
    packaged page is written instead, the rejection is counted and the gauge says so.
    """
    running.publisher.set_template(FailsOnTwo())
    running.submit("10.0.0.1", "10.0.0.2")
    wait_until(lambda: running.writes() == 1, timeout=5, what="the first write")
    assert "<!doctype html>" in (running.folder / "index.html").read_text().lower()
    rejected = running.metrics.registry.get_sample_value(
        "podlister_errors_total", {"kind": "template"}
    )
    assert rejected == 1
    assert running.metrics.registry.get_sample_value("podlister_template_rejected") == 1


def test_with_a_template_folder_the_first_page_waits_for_the_template(tmp_path: Path) -> None:
    """With a template folder set, a snapshot is not written until the template watcher has
    handed on its first template: the first page is already the user's (one write, not the
    packaged page and then theirs).
    """
    folder = tmp_path / "out"
    folder.mkdir()
    looked = [0]

    def clock() -> float:  # the loop calls it each time it looks at its state
        looked[0] += threading.current_thread().name == "publish"
        return time.monotonic()

    publisher = Running(folder, clock, template_dir=tmp_path)
    try:
        wait_until(lambda: looked[0], timeout=5, what="the loop's first look")
        before = looked[0]  # it found nothing to do, and waits for news
        publisher.submit("10.0.0.1")
        wait_until(lambda: looked[0] > before, timeout=5, what="the loop seeing the snapshot")
        publisher.publisher.set_template(FailsOnTwo())
        html = wait_until((folder / "index.html").read_text, timeout=5, what="the first page")
        assert html == "ok"
        assert publisher.writes() == 1
    finally:
        publisher.stop()


def test_a_stamped_change_is_measured_once_and_shown_on_the_page(tmp_path: Path) -> None:
    """A slice whose trigger time is after the start: once its page is written, one
    observation of the programming latency, and index.json says how long it took; the same
    trigger in the next change's snapshot is not measured again.
    """
    folder = tmp_path / "out"
    folder.mkdir()
    publisher = Running(folder, time.monotonic)
    try:
        stamp = dt.datetime.now(dt.UTC).isoformat()
        for count, addresses in enumerate((["10.0.0.1"], ["10.0.0.1", "10.0.0.2"]), 1):
            obj = endpoint_slice(
                "web-a",
                service="web",
                endpoints=[endpoint(a) for a in addresses],
                triggered_at=stamp,
            )
            snapshot = Snapshot(
                views=(slice_view(obj),), source=Source.ENDPOINT_SLICES, received_at=0.0
            )
            publisher.publisher.submit(snapshot)

            def written(expected: int = count) -> bool:
                return publisher.writes() == expected

            wait_until(written, timeout=5, what="the write")
        registry = publisher.metrics.registry
        name = "podlister_network_programming_duration_seconds_count"
        assert registry.get_sample_value(name) == 1
        latency = json.loads((folder / "index.json").read_text())["programming_latency_ms"]
        assert isinstance(latency, int)
        assert 0 <= latency < 60_000
    finally:
        publisher.stop()


def test_a_failed_write_is_retried_until_the_folder_works(tmp_path: Path) -> None:
    """The output path is a file, not a folder: the write fails, is counted, the pod is not
    ready; once the folder exists the retry writes the page.
    """
    folder = tmp_path / "out"
    folder.write_text("not a folder")
    publisher = Running(folder, time.monotonic)
    try:
        publisher.submit("10.0.0.1")
        wait_until(
            lambda: publisher.metrics.registry.get_sample_value(
                "podlister_errors_total", {"kind": "write"}
            ),
            timeout=5,
            what="the failed write counted",
        )
        assert not publisher.health.ready
        folder.unlink()
        folder.mkdir()
        wait_until(lambda: publisher.writes() == 1, timeout=15, what="the retried write")
        assert publisher.listed() == ["10.0.0.1"]
    finally:
        publisher.stop()


def test_the_previous_page_is_served_and_rewritten_without_a_snapshot(tmp_path: Path) -> None:
    """A publisher started on the page an earlier run left (read back by previous) keeps its
    members before any snapshot: marking it stale rewrites that page, same addresses.
    """
    folder = tmp_path / "out"
    folder.mkdir()
    first = Running(folder, time.monotonic)
    try:
        first.submit("10.0.0.2", "10.0.0.1")
        wait_until(lambda: first.writes() == 1, timeout=5, what="the first run's page")
    finally:
        first.stop()
    previous = read_previous(folder, service="web", namespace="default")
    assert previous is not None
    second = Running(folder, time.monotonic, previous=previous)
    try:
        second.publisher.set_stale(dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC))
        wait_until(lambda: second.writes() == 1, timeout=5, what="the stale rewrite")
        assert second.listed() == ["10.0.0.1", "10.0.0.2"]
        assert '"stale_since": "2026-11-30T12:00:00.000Z"' in (folder / "index.json").read_text()
    finally:
        second.stop()


def test_a_full_folder_gets_the_compact_page_with_every_address(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the full page does not fit (here: ENOSPC for any index.html naming a pod), the
    compact page is written instead: every address listed, the fallback counted, the pod
    ready.
    """
    real_write = write.write_files

    def small_disk(folder: Path, files: dict[str, bytes], **kwargs: int) -> list[str]:
        if b"web-pod-" in files.get("index.html", b""):
            raise WriteError(folder / "index.html", OSError(errno.ENOSPC, "No space left"))
        return real_write(folder, files, **kwargs)

    monkeypatch.setattr(writer, "write_files", small_disk)
    addresses = [f"10.0.0.{n}" for n in range(1, 41)]
    obj = endpoint_slice(
        "web-a", service="web", endpoints=[endpoint(a, pod=f"web-pod-{a}") for a in addresses]
    )
    running.publisher.submit(
        Snapshot(views=(slice_view(obj),), source=Source.ENDPOINT_SLICES, received_at=0.0)
    )
    wait_until(lambda: running.writes() == 1, timeout=5, what="the compact write")
    assert sorted(running.listed()) == sorted(addresses)
    compact = running.metrics.registry.get_sample_value(
        "podlister_errors_total", {"kind": "write_compact"}
    )
    assert compact == 1
    assert running.health.ready


def test_pages_of_at_least_the_threshold_are_followed_by_a_heap_trim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a write whose three pages reach the trim's threshold the heap is trimmed once;
    after a smaller one it is not.
    """
    folder = tmp_path / "out"
    folder.mkdir()
    trims: list[int] = []
    threshold = 40_000
    monkeypatch.setattr(writer, "TRIM_FROM_BYTES", threshold)
    monkeypatch.setattr(writer, "_trim_heap", lambda: trims.append(1))
    running = Running(folder, time.monotonic)

    def pages_size() -> int:
        return sum(
            (folder / name).stat().st_size for name in ("index.html", "index.json", "index.txt")
        )

    try:
        running.submit("10.0.0.1")
        wait_until(lambda: running.writes() == 1, timeout=5, what="the small write")
        assert pages_size() < threshold
        assert trims == []
        running.submit(*(f"10.0.{n // 250}.{n % 250 + 1}" for n in range(400)))
        wait_until(lambda: running.writes() == 2, timeout=5, what="the large write")
        assert pages_size() >= threshold
        wait_until(lambda: trims == [1], timeout=5, what="the trim after the large write")
    finally:
        running.stop()
