"""Live template reloads: watch the template folder and hand each valid template on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import structlog
import watchfiles

from sidecar.configmap.worker import load_template
from sidecar.metrics import ErrorKind
from sidecar.page.render import TemplateError

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


def first_template(template_dir: Path, metrics: Metrics) -> PageTemplate | None:
    """The folder's template; None (the packaged page) when it has none or it is broken.

    A broken ConfigMap must not crash-loop new pods: the watcher applies the fix later.
    """
    try:
        return load_template(template_dir)
    except TemplateError as exc:
        metrics.errors.labels(ErrorKind.TEMPLATE).inc()
        log.error("template_invalid", **exc.fields(), keeping="<packaged>")
        return None


def watch_templates(  # noqa: PLR0913 - keyword-only wiring
    *,
    template_dir: Path,
    current: PageTemplate | None,
    sink: TemplateSink,
    health: HealthState,
    metrics: Metrics,
    stop_event: threading.Event,
) -> None:
    """Reload on every change in the folder until stopped; a broken template is only logged.

    ``current``: the template in use (None: the packaged page, as when the file is removed).
    The whole folder is watched, not the file: a ConfigMap volume updates by swapping its
    ``..data`` symlink, so the file's own inode never changes.
    """
    # Between changes this thread waits inside watchfiles for as long as nothing changes.
    health.waiting(WORKER)
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
        try:
            template = load_template(template_dir)
        except TemplateError as exc:
            metrics.errors.labels(ErrorKind.TEMPLATE).inc()
            keeping = current.origin if current is not None else "<packaged>"
            log.error("template_invalid", **exc.fields(), keeping=keeping)
            continue
        finally:
            health.waiting(WORKER)  # back to waiting for the next change, loaded or not
        if _source(template) == _source(current):
            if template is not None:
                template.close()
            continue
        current = template
        log.info("template_reloaded", origin=template.origin if template else "<packaged>")
        sink.set_template(template)


def _source(template: PageTemplate | None) -> str | None:
    return template.source if template is not None else None
