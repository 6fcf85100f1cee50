"""Debian's Chromium, driven by Playwright for Python: no browser download, nothing external.

Playwright only brings its driver; the browser is the distribution's (`apt-get install
chromium`, done by .ci/run). The flags keep Chromium from reaching for Google's hosts,
which this machine's closed network refuses many times a second.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM_FLAGS = [
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]
INSTALL_HINT = "Chromium is missing: apt-get install chromium (the browser tests drive it)"
# Screenshots land here (the README shows one copied into docs/).
SCREENSHOT_DIR = Path(
    os.environ.get(
        "PODLISTER_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "build/screenshots"
    )
)
# The addresses the page lists as ready (rows on their way out not counted).
READY_ROWS = "#ready > li:not(.leaving) > code"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
SCHEMES: tuple[Literal["light"], Literal["dark"]] = ("light", "dark")


def chromium_path() -> str:
    """The distribution's Chromium; a clear error, not a skip, when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise FileNotFoundError(INSTALL_HINT)
    return found


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium with the flags this machine needs."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
    )


_SCRIPTS = Path(__file__).resolve().parents[1] / "js"


def page_probes() -> str:
    """Init script: counts fetches, records CSP violations and highlighted rows (js/probes.js)."""
    return (_SCRIPTS / "probes.js").read_text(encoding="utf-8")


def low_contrast_script() -> str:
    """A function returning the texts under WCAG AA contrast (js/low-contrast.js)."""
    text = (_SCRIPTS / "low-contrast.js").read_text(encoding="utf-8")
    # Without its comment header, so that Playwright sees a function to call.
    return "\n".join(line for line in text.splitlines() if not line.startswith("//"))


def wait_ready_rows(page: Page, expected: list[str], *, timeout_ms: float) -> None:
    """Wait (bounded) until the page lists exactly these addresses as ready, in order."""
    page.wait_for_function(
        "expected => JSON.stringify(Array.from(document.querySelectorAll("
        f"'{READY_ROWS}'), c => c.textContent)) === JSON.stringify(expected)",
        arg=expected,
        timeout=timeout_ms,
    )


def screenshots(page: Page, label: str) -> list[str]:
    """The page at both widths in both colour schemes, saved as SCREENSHOT_DIR/label-width-
    scheme.png; the texts below WCAG AA contrast in any of them. Leaves the page light, at
    desktop width.
    """
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    low = []
    for scheme in SCHEMES:
        # Reduced motion: highlights hold their colours, so contrast is measured at rest.
        page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
        for width_name, (width, height) in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": height})
            page.screenshot(path=SCREENSHOT_DIR / f"{label}-{width_name}-{scheme}.png")
            low += [f"{scheme} {width_name}: {t}" for t in page.evaluate(low_contrast_script())]
    page.emulate_media(color_scheme="light", reduced_motion="no-preference")
    page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})
    return low
