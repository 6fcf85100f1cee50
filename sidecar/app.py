"""Wiring: one stop event, three worker threads, and an orderly exit within two seconds."""

from __future__ import annotations

import functools
import gc
import signal
import threading
import time
from typing import TYPE_CHECKING

import structlog

from sidecar.config import ExitCode
from sidecar.health import HealthServer, HealthState
from sidecar.kube import ConnectionConfigError, api_client
from sidecar.logs import configure_logging
from sidecar.metrics import Metrics
from sidecar.publish import Publisher
from sidecar.render import TemplateError, load_template
from sidecar.templates_watch import watch_templates
from sidecar.watch import EndpointWatcher
from sidecar.write import remove_stale_temps

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import FrameType

    from kubernetes.client import ApiClient

    from sidecar.config import Settings
    from sidecar.render import PageTemplate

log = structlog.get_logger("sidecar")

# /healthz fails after this many idle timeouts without any sign of life from the API.
STALE_AFTER_IDLE_TIMEOUTS = 3
STOP_GRACE = 1.5  # seconds; the whole exit must fit in the 2 s the contract promises


def _settings_for_log(settings: Settings) -> dict[str, object]:
    return {
        "service": settings.service,
        "namespace": settings.namespace,
        "output_dir": str(settings.output_dir),
        "template_dir": str(settings.template_dir) if settings.template_dir else None,
        "pod_name": settings.pod_name,
        "pod_ip": settings.pod_ip,
        "health_addr": f"{settings.health_host}:{settings.health_port}",
        "idle_timeout": settings.idle_timeout,
        "watch_timeout": settings.watch_timeout,
    }


def _clean_output(settings: Settings) -> None:
    """Remove temps a killed predecessor left; a broken folder is reported, not fatal."""
    try:
        removed = remove_stale_temps(settings.output_dir)
    except OSError as exc:
        log.error("output_dir_unusable", path=str(settings.output_dir), reason=str(exc))
        return
    if removed:
        log.info("stale_temps_removed", files=removed)


def _prepare(settings: Settings, environ: Mapping[str, str]) -> tuple[PageTemplate, ApiClient]:
    """Everything that can fail with a configuration error, before any thread starts."""
    if settings.template_dir is not None and not settings.template_dir.is_dir():
        msg = f"PODLISTER_TEMPLATE_DIR {settings.template_dir} is not a directory"
        raise ConnectionConfigError(msg)
    return load_template(settings.template_dir), api_client(environ)


def _workers(  # noqa: PLR0913 - the collaborators the threads run
    *,
    settings: Settings,
    template: PageTemplate,
    publisher: Publisher,
    watcher: EndpointWatcher,
    metrics: Metrics,
    stop: threading.Event,
) -> dict[str, Callable[[], None]]:
    workers: dict[str, Callable[[], None]] = {"publish": publisher.run, "watch": watcher.run}
    if settings.template_dir is not None:
        workers["templates"] = functools.partial(
            watch_templates,
            template_dir=settings.template_dir,
            current=template,
            on_template=publisher.set_template,
            metrics=metrics,
            stop_event=stop,
        )
    return workers


class Workers:
    """Worker threads; one that ends before the stop event is set sets it and is recorded.

    A worker that dies is a bug: exiting lets the kubelet restart us. Being told, rather
    than checking the threads every second, keeps the idle process from waking at all.
    """

    def __init__(self, stop: threading.Event) -> None:
        """Bind the workers to the one stop event of the process."""
        self._stop = stop
        self._threads: list[threading.Thread] = []
        self.died: list[str] = []

    def start(self, name: str, target: Callable[[], None]) -> None:
        """Run target in a daemon thread called name."""
        thread = threading.Thread(target=self._guarded, args=(name, target), name=name)
        thread.daemon = True
        thread.start()
        self._threads.append(thread)

    def join(self, deadline: float) -> None:
        """Wait for every thread until the monotonic deadline at the latest."""
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _guarded(self, name: str, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception:
            log.exception("worker_crashed", worker=name)
        finally:
            if not self._stop.is_set():
                self.died.append(name)
                self._stop.set()


def _install_signal_handlers(stop: threading.Event) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run(settings: Settings, environ: Mapping[str, str]) -> int:
    """Start everything, wait for a signal or a dead worker, then stop everything."""
    configure_logging(settings.log_format)
    log.info("start", **_settings_for_log(settings))
    try:
        template, client = _prepare(settings, environ)
    except TemplateError as exc:
        log.error("template_invalid", file=exc.file, line=exc.line, reason=exc.reason)
        return ExitCode.CONFIG
    except ConnectionConfigError as exc:
        log.error("config_invalid", reason=str(exc))
        return ExitCode.CONFIG
    _clean_output(settings)

    stop = threading.Event()
    metrics = Metrics()
    health = HealthState(stale_after=STALE_AFTER_IDLE_TIMEOUTS * settings.idle_timeout)
    try:
        server = HealthServer(
            host=settings.health_host, port=settings.health_port, state=health, metrics=metrics
        )
    except OSError as exc:
        log.error("health_bind_failed", port=settings.health_port, reason=str(exc))
        return ExitCode.FAILURE
    publisher = Publisher(
        settings=settings, template=template, health=health, metrics=metrics, stop_event=stop
    )
    watcher = EndpointWatcher(
        api_client=client,
        service=settings.service,
        namespace=settings.namespace,
        idle_timeout=settings.idle_timeout,
        watch_timeout=settings.watch_timeout,
        on_change=publisher.submit,
        health=health,
        metrics=metrics,
        stop_event=stop,
    )
    workers = _workers(
        settings=settings,
        template=template,
        publisher=publisher,
        watcher=watcher,
        metrics=metrics,
        stop=stop,
    )
    _install_signal_handlers(stop)
    server.start()
    threads = Workers(stop)
    for name, target in workers.items():
        threads.start(name, target)
    # Everything alive now lives for the whole run: keep the collector off it, which keeps
    # collection pauses out of the event-to-file latency.
    gc.collect()
    gc.freeze()

    # No timeout: a signal interrupts the wait, its handler sets the event.
    stop.wait()
    code = ExitCode.FAILURE if threads.died else ExitCode.OK
    if threads.died:
        log.error("worker_died", workers=threads.died)
    watcher.stop()
    publisher.stop()
    threads.join(deadline=time.monotonic() + STOP_GRACE)
    server.stop()
    client.close()  # type: ignore[no-untyped-call]
    log.info("stop", exit_code=code)
    return code
