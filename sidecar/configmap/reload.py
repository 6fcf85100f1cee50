"""Live template reloads: watch the template folder and hand each valid template on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import structlog
import watchfiles

from sidecar.configmap.worker import Stopping, load_template
from sidecar.metrics import ErrorKind
from sidecar.page.render import TEMPLATE_NAME, TemplateError

if TYPE_CHECKING:
    import threading
    from pathlib import Path

    from sidecar.health.state import HealthState
    from sidecar.metrics import Metrics
    from sidecar.page.render import PageTemplate

log = structlog.get_logger("sidecar.templates")
WORKER = "templates"


class TemplateSink(Protocol):
    """Where new templates go (the publisher)."""

    def set_template(self, template: PageTemplate | None) -> None:
        """Render with template (None: the packaged page) from the next page on."""


def watch_templates(
    *,
    template_dir: Path,
    sink: TemplateSink,
    health: HealthState,
    metrics: Metrics,
    stop_event: threading.Event,
) -> None:
    """Load the folder's template, then again at every change in the folder, until stopped.

    The first load is here, in this thread, so that a slow compile (a hostile template may
    take its whole CPU bound) does not hold up a stop; the first page waits for its outcome.
    Every load is handed on, the same text again too (a template rejected on real data comes
    back when written again); a broken one is logged and counted, and the page keeps its
    template: at start the packaged page (a broken ConfigMap must not crash-loop new pods).
    The whole folder is watched, not the file: a ConfigMap volume swaps its ``..data`` symlink.
    """
    health.beat(WORKER)
    keeping = _load(template_dir, sink, metrics, stop_event, keeping="")
    health.waiting(WORKER)  # between changes it waits inside watchfiles, for any time
    for _ in watchfiles.watch(
        template_dir,
        watch_filter=None,
        stop_event=stop_event,
        debounce=100,
        step=20,
        ignore_permission_denied=True,
        raise_interrupt=False,
    ):
        health.beat(WORKER)
        keeping = _load(template_dir, sink, metrics, stop_event, keeping=keeping)
        health.waiting(WORKER)


def _load(
    template_dir: Path,
    sink: TemplateSink,
    metrics: Metrics,
    stop_event: threading.Event,
    *,
    keeping: str,
) -> str:
    """Load the folder's template and hand it on; the origin of the one the page keeps.

    keeping: that origin so far, "" before the first load.
    """
    try:
        template = load_template(template_dir, stop_event)
    except Stopping:  # the child was ended: nothing to say about the template
        return keeping
    except TemplateError as exc:
        metrics.template_rejected.set(1)
        metrics.errors.labels(ErrorKind.TEMPLATE).inc()
        log.error("template_invalid", **exc.fields(), keeping=keeping or "<packaged>")
        if not keeping:  # the first load: the publisher waits for a word
            sink.set_template(None)
        return keeping or "<packaged>"
    if template is None and (template_dir / "index.html").exists():
        log.warning(
            "template_not_used",
            found=str(template_dir / "index.html"),
            hint=f"name it {TEMPLATE_NAME}: index.html is what the sidecar writes",
        )
    origin = template.origin if template is not None else "<packaged>"
    metrics.template_rejected.set(0)
    log.info("template_loaded", origin=origin)
    sink.set_template(template)
    return origin
