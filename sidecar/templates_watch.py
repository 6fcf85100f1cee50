"""Live template reloads: watch the template folder and hand valid templates on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import watchfiles

from sidecar.kinds import ErrorKind
from sidecar.sandbox import TemplateError, load_template

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from pathlib import Path

    from sidecar.health import HealthState
    from sidecar.metrics import Metrics
    from sidecar.sandbox import Template

log = structlog.get_logger("sidecar.templates")
WORKER = "templates"


def watch_templates(  # noqa: PLR0913 - keyword-only wiring
    *,
    template_dir: Path,
    current: Template,
    on_template: Callable[[Template], None],
    health: HealthState,
    metrics: Metrics,
    stop_event: threading.Event,
) -> None:
    """Reload on every change in the folder until stopped; a broken template is only logged.

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
            log.error("template_invalid", **exc.fields(), keeping=current.origin)
            continue
        finally:
            health.waiting(WORKER)  # back to waiting for the next change, loaded or not
        if template.source == current.source:
            template.close()
            continue
        current = template
        log.info("template_reloaded", origin=template.origin)
        on_template(template)
