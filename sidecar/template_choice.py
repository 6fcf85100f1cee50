"""Which template renders the page: the one given, the last good one, or the packaged one.

A page is always written, whatever the template or the data.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import structlog

from sidecar.kinds import ErrorKind
from sidecar.render import render_files
from sidecar.sandbox import TemplateError

if TYPE_CHECKING:
    from sidecar.document import PageData
    from sidecar.fragments import Fragments
    from sidecar.metrics import Metrics
    from sidecar.sandbox import Template

log = structlog.get_logger("sidecar.publish")


class TemplateChoice:
    """The template in use, the one to go back to, and the packaged fallback.

    ``set`` comes from the template watcher's thread, ``render`` from the publisher's.
    """

    def __init__(self, template: Template, fallback: Template, metrics: Metrics) -> None:
        """Start with template; fallback (the packaged page) renders when it fails."""
        self._current, self._fallback, self._metrics = template, fallback, metrics
        # The latest template from outside that rendered real data: the one to go back to.
        self._last_good: Template | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> Template:
        """The template the next page renders with."""
        with self._lock:
            return self._current

    def set(self, template: Template) -> None:
        """Use a new, already validated template from the next page on."""
        with self._lock:
            old, self._current = self._current, template
            keep = old is self._fallback or old is self._last_good
        if not keep:
            old.close()

    def render(self, data: PageData, template: Template, fragments: Fragments) -> dict[str, bytes]:
        """The files from template, whatever happens.

        A template that fails on real data (an error, or a CPU or memory bound) is rejected
        like one that does not compile: the last template that rendered real data takes its
        place, else the packaged page, until a new template comes. Data too large for the
        packaged page (a hostile API answer) gives the compact page: every address, without
        names or history.
        """
        try:
            files = render_files(data, template, fragments)
        except TemplateError as exc:
            if template is not self._fallback:
                self._metrics.errors.labels(ErrorKind.TEMPLATE).inc()
                return self.render(data, self._reject(template, exc), fragments)
            if data.compact:
                raise  # the compact page of the packaged template cannot fail: a bug
            self._metrics.errors.labels(ErrorKind.RENDER_COMPACT).inc()
            log.error("render_compact", **exc.fields(), addresses=len(data.membership.ready))
            return render_files(data.compacted(), self._fallback, fragments)
        if template is not self._fallback:
            with self._lock:
                old = self._last_good if template is not self._last_good else None
                self._last_good = template
                close = old is not None and old is not self._current
            if close and old is not None:
                old.close()
        return files

    def _reject(self, template: Template, exc: TemplateError) -> Template:
        """Drop a template that failed on real data; the one to render with instead."""
        template.close()
        with self._lock:
            if self._last_good is template:
                self._last_good = None
            instead = self._last_good or self._fallback
            if self._current is template:
                self._current = instead
        log.error("template_rejected", **exc.fields(), keeping=instead.origin)
        return instead
