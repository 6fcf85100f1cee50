"""The page in a real browser: Debian's Chromium against the local cluster's load balancer.

Every page here comes from real sidecars through real nginx (the one nginx.conf, with its
Content-Security-Policy), reached through the load balancer as a user reaches it.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import sync_playwright

from support.browser import READY_ROWS, launch, page_probes, screenshots, wait_ready_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route

    from localcluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
# The bound: a change in the cluster shows in the open page within 2 s, no reload.
LIVE_BOUND_MS = 2000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; closed (by Playwright, by pid) afterwards."""
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


class Watched:
    """A page with its console errors and uncaught exceptions collected."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        context.add_init_script(page_probes())
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            self.errors.append(f"{message.type}: {message.text} ({message.location['url']})")

    def probe(self) -> dict[str, Any]:
        """What the init script recorded: fetches, CSP violations, highlighted rows."""
        recorded: dict[str, Any] = self.page.evaluate("window.__probe")
        return recorded

    def ready_rows(self) -> list[str]:
        """The addresses the page lists as ready now (rows on their way out not counted)."""
        return self.page.locator(READY_ROWS).all_inner_texts()

    def wait_ready_rows(self, expected: list[str], timeout_ms: float) -> None:
        """Wait (bounded) until the ready list shows exactly these addresses, in order."""
        wait_ready_rows(self.page, expected, timeout_ms=timeout_ms)

    def wait_live(self) -> None:
        """Wait until the page has fetched index.json and says it is live."""
        self.page.wait_for_selector("#live[data-state='live']", timeout=10_000)


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A fresh browser context and page; closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield Watched(context)
    context.close()


@pytest.mark.timeout(240)
def test_page_follows_scaling_live(cluster: LocalCluster, watched: Watched) -> None:
    """Opened through the load balancer, the page shows a scale-up and a scale-down within
    2 s without a reload: new rows highlighted, the changes on the timeline, the replica that
    answered marked, an unchanged list answered with 304; no console errors, no CSP
    violation, WCAG AA contrast in light and dark at desktop and phone width.
    """
    cluster.scale_to(2)
    page = watched.page
    statuses: list[int] = []
    page.on(
        "response", lambda r: statuses.append(r.status) if r.url.endswith("/index.json") else None
    )
    response = page.goto(cluster.lb.url + "/")
    assert response is not None
    assert response.status == 200
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    watched.wait_live()
    assert watched.ready_rows() == cluster.ready_ips()

    cluster.scale_to(4)
    watched.wait_ready_rows(cluster.ready_ips(), LIVE_BOUND_MS)
    new = cluster.ready_ips()[2:]
    page.wait_for_function(
        "n => document.querySelectorAll('#changes > li').length >= n", arg=2, timeout=5000
    )
    assert "+1 pod" in page.inner_text("#changes")
    answered = page.inner_text("#answered")
    assert any(f"({ip})" in answered for ip in cluster.ready_ips()), answered
    badges = page.locator("#ready .badge[data-kind='answered']")
    assert badges.count() == 1
    low_contrast = screenshots(watched.page, "scaled-to-4")

    cluster.scale_to(1)
    watched.wait_ready_rows(cluster.ready_ips(), LIVE_BOUND_MS)
    page.wait_for_function(
        "() => document.getElementById('announce').textContent.includes('removed')",
        timeout=5000,
    )
    # One replica left: its unchanged list costs a 304 from the next poll on.
    page.wait_for_function("() => window.__probe.fetches >= 3", timeout=5000)
    watched.wait_live()
    page.wait_for_function(
        "n => window.__probe.fetches >= n", arg=watched.probe()["fetches"] + 2, timeout=5000
    )

    probe = watched.probe()
    assert probe["loads"] == 1, "the page must update itself, never reload"
    assert sorted(set(probe["highlighted"])) == sorted(new)
    assert 304 in statuses
    assert probe["csp"] == []
    assert watched.errors == []
    assert low_contrast == []


@pytest.mark.timeout(120)
def test_without_javascript_the_page_is_complete(cluster: LocalCluster, browser: Browser) -> None:
    """With JavaScript off the page still lists every ready pod, with pod and zone, and says
    it is a snapshot.
    """
    cluster.scale_to(2)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(cluster.lb.url + "/")
        rows = page.locator(READY_ROWS).all_inner_texts()
        assert rows == cluster.ready_ips()
        first = page.inner_text("#ready > li")
        assert "podlister-1" in first
        assert "zone local-" in first
        assert "Snapshot" in page.inner_text("#live")
    finally:
        context.close()


@pytest.mark.timeout(120)
def test_paused_while_hidden_and_backs_off_when_unreachable(
    cluster: LocalCluster, watched: Watched
) -> None:
    """A hidden tab makes no requests and refreshes at once when shown again; unreachable,
    the page says so and retries after 2, then 4 s, and goes live again when the server is back.
    """
    cluster.scale_to(1)
    page = watched.page
    # The page's timers run on a clock the test moves: no waiting on real seconds.
    page.clock.install()
    page.goto(cluster.lb.url + "/")
    watched.wait_live()
    fetches = watched.probe()["fetches"]
    page.clock.run_for(1000)
    page.wait_for_function("n => window.__probe.fetches === n", arg=fetches + 1, timeout=5000)
    watched.wait_live()

    set_hidden(page, hidden=True)
    page.clock.run_for(1000)  # the pending poll finds the tab hidden
    page.wait_for_selector("#live[data-state='paused']", timeout=5000)
    paused_at = watched.probe()["fetches"]
    page.clock.run_for(60_000)
    assert watched.probe()["fetches"] == paused_at
    set_hidden(page, hidden=False)
    page.wait_for_function("n => window.__probe.fetches === n", arg=paused_at + 1, timeout=5000)
    watched.wait_live()

    cluster.lb.stop()
    page.clock.run_for(1000)
    page.wait_for_selector("#live[data-state='error']", timeout=5000)
    assert "retrying in 2 s" in page.inner_text("#live")
    failed_at = watched.probe()["fetches"]
    page.clock.run_for(1500)
    assert watched.probe()["fetches"] == failed_at
    page.clock.run_for(600)
    page.wait_for_function(
        "() => document.getElementById('live').textContent.includes('retrying in 4 s')",
        timeout=5000,
    )
    assert watched.probe()["fetches"] == failed_at + 1

    cluster.lb.start()
    page.clock.run_for(4100)
    watched.wait_live()
    assert watched.ready_rows() == cluster.ready_ips()
    assert watched.probe()["csp"] == []
    # The browser logs each refused connection; nothing else may show up.
    assert [e for e in watched.errors if "ERR_CONNECTION_REFUSED" not in e] == []


def set_hidden(page: Page, *, hidden: bool) -> None:
    """Make the document report itself hidden (or visible) and tell the page, as a tab switch
    does: headless Chromium keeps every page visible.
    """
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
            Object.defineProperty(document, "visibilityState", {
                configurable: true, get: () => (hidden ? "hidden" : "visible"),
            });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


@pytest.mark.timeout(120)
def test_a_leaving_row_does_not_keep_the_answered_mark(
    cluster: LocalCluster, watched: Watched
) -> None:
    """When a replica that has not caught up yet answers with a list lacking the replica that
    answered before, that row shrinks away without its "answered" mark: exactly one row of
    the ready list says it answered the latest refresh, the one that did.
    """
    cluster.scale_to(2)
    with urllib.request.urlopen(cluster.lb.url + "/index.json", timeout=5) as response:  # noqa: S310
        document = json.loads(response.read())
    first, second = document["members"]
    # The first refresh is answered by the second replica, listing both; every later one by
    # the first replica, with a list that has not caught up (the second is missing).
    answers = [(second["address"], [first, second])]
    behind = (first["address"], [first])

    def answer(route: Route) -> None:
        ip, members = answers.pop(0) if answers else behind
        route.fulfill(
            status=200,
            headers={"X-Pod-IP": ip, "Content-Type": "application/json", "ETag": f'"{ip}"'},
            body=json.dumps({**document, "members": members}),
        )

    page = watched.page
    page.route("**/index.json", answer)
    page.goto(cluster.lb.url + "/")
    seen = page.wait_for_function(
        """() => {
            const leaving = document.querySelector("#ready > li.leaving");
            if (!leaving) return null;
            const marked = document.querySelectorAll("#ready .badge[data-kind='answered']");
            return Array.from(marked, (b) => b.closest("li").querySelector("code").textContent);
        }""",
        timeout=10_000,
    ).json_value()
    assert seen == [first["address"]]


@pytest.mark.timeout(120)
def test_csp_blocks_inline_script(cluster: LocalCluster, watched: Watched) -> None:
    """The CSP nginx sends is in force: an inline script injected into the page does not run
    and is reported as a violation (so the clean record above means something).
    """
    cluster.scale_to(1)
    page = watched.page
    page.goto(cluster.lb.url + "/")
    watched.wait_live()
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.__inlineRan = true";
            document.body.append(script);
        }"""
    )
    page.wait_for_function("() => window.__probe.csp.length > 0", timeout=5000)
    assert page.evaluate("window.__inlineRan === undefined")
    assert watched.probe()["csp"][0].startswith("script-src")


def test_readme_shows_the_screenshots() -> None:
    """The README shows the committed screenshots (copies of what this module saves), and
    docs/benchmarks.md the page with 100 rows (what the hundred replicas test saves).
    """
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("page-desktop-light.png", "page-phone-dark.png"):
        assert (REPO / "docs" / name).is_file(), name
        assert f"docs/{name}" in readme, name
    benchmarks = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for name in ("page-100-desktop-light.png", "page-100-phone-dark.png"):
        assert (REPO / "docs" / name).is_file(), name
        assert f"({name})" in benchmarks, name
