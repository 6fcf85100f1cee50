"""Wiring: one stop event, three worker threads, and an orderly exit within two seconds."""

from __future__ import annotations

import functools
import gc
import signal
import threading
import time
from typing import TYPE_CHECKING

import structlog

from sidecar.backoff import DEFAULT_CAP, Backoff
from sidecar.config import ExitCode
from sidecar.failures import FailureTracker
from sidecar.health import HealthState
from sidecar.health_server import HealthServer
from sidecar.kinds import ErrorKind
from sidecar.kube import Connection, ConnectionConfigError, connect
from sidecar.listwatch import CONNECT_TIMEOUT, ListerWatcher
from sidecar.logs import configure_logging
from sidecar.metrics import Metrics
from sidecar.previous import read_previous
from sidecar.publish import Publisher
from sidecar.sandbox import TemplateError, load_template, packaged_template
from sidecar.templates_watch import watch_templates
from sidecar.watch import WORKER, EndpointWatcher
from sidecar.write import remove_stale_temps

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sidecar.config import Settings
    from sidecar.sandbox import Template

log = structlog.get_logger("sidecar")

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


def _stuck_after(settings: Settings) -> float:
    """Longest a worker may go without a beat before /healthz calls the process stuck.

    The watch legitimately blocks for a read (idle timeout), a connect and a backoff step;
    twice the sum leaves room for a throttled CPU. An unreachable API never gets here: the
    watch beats at every retry.
    """
    return 2 * (settings.idle_timeout + CONNECT_TIMEOUT + DEFAULT_CAP)


def _first_template(settings: Settings, metrics: Metrics) -> Template:
    """The configured template, or the packaged page when it is broken.

    A broken ConfigMap must not crash-loop every new pod: they start with the packaged
    page, and the template watcher applies the fix when it comes.
    """
    try:
        return load_template(settings.template_dir)
    except TemplateError as exc:
        metrics.errors.labels(ErrorKind.TEMPLATE).inc()
        log.error("template_invalid", **exc.fields(), keeping="<packaged>")
        return packaged_template()


def _watcher(  # noqa: PLR0913 - the collaborators the watch is wired to
    *,
    settings: Settings,
    connection: Connection,
    publisher: Publisher,
    health: HealthState,
    metrics: Metrics,
    stop: threading.Event,
) -> EndpointWatcher:
    """The watch loop, its source of lists and watches, and its failure tracker."""
    failures = FailureTracker(
        metrics=metrics,
        backoff=Backoff(),
        host=connection.configuration.host,
        namespace=settings.namespace,
        on_stale=publisher.set_stale,
        on_unauthorized=connection.reload_credentials,
    )
    source = ListerWatcher(
        get=connection.get,
        service=settings.service,
        namespace=settings.namespace,
        idle_timeout=settings.idle_timeout,
        on_forbidden=lambda error, verb, resource: failures.forbidden(
            error, verb=verb, resource=resource
        ),
        beat=lambda: health.beat(WORKER),
    )
    return EndpointWatcher(
        source=source,
        failures=failures,
        watch_timeout=settings.watch_timeout,
        idle_timeout=settings.idle_timeout,
        on_change=publisher.submit,
        health=health,
        metrics=metrics,
        stop_event=stop,
    )


def _workers(  # noqa: PLR0913 - the collaborators the threads run
    *,
    settings: Settings,
    template: Template,
    publisher: Publisher,
    watcher: EndpointWatcher,
    health: HealthState,
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
            health=health,
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


# SIGTERM (the kubelet) and SIGINT (Ctrl-C) stop the process; the others here would end it by
# default, and nobody should be able to do that with a stray kill -HUP.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
IGNORED_SIGNALS = frozenset({signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2})


def _take_signals(stop: threading.Event) -> None:
    """Turn signals into the stop event without any Python signal handler.

    A handler runs in the main thread between any two bytecodes, including inside
    ``stop.set()`` (the main thread calls it while stopping, holding the event's lock); a
    handler that sets the event there would wait for that lock forever. Instead the signals
    are blocked in every thread (threads inherit the mask, so this runs before any is
    started) and one thread waits for them with sigwait: plain code, no reentrancy.
    """
    watched = STOP_SIGNALS | IGNORED_SIGNALS
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)

    def wait_for_signals() -> None:
        while True:
            signum = signal.sigwait(watched)
            name = signal.Signals(signum).name
            if signum in STOP_SIGNALS:
                if not stop.is_set():
                    log.info("signal", signal=name, action="stop")
                stop.set()
            else:
                log.info("signal", signal=name, action="ignored")

    threading.Thread(target=wait_for_signals, name="signals", daemon=True).start()


def run(
    settings: Settings, environ: Mapping[str, str], *, client_fallback: str | None = None
) -> int:
    """Start everything, wait for a signal or a dead worker, then stop everything.

    Signals stay blocked to the end: one that comes while the interpreter shuts down is
    never acted on (a default action would end us with 143 instead of 0).
    ``client_fallback``: why the whole client was imported instead of its parts, if it was.
    """
    configure_logging(settings.log_format)
    if client_fallback is not None:
        log.warning("client_import_fallback", reason=client_fallback, using="import kubernetes")
    stop = threading.Event()
    _take_signals(stop)
    return _run(settings, environ, stop)


def _run(settings: Settings, environ: Mapping[str, str], stop: threading.Event) -> int:
    log.info("start", **_settings_for_log(settings))
    # In a pod both are volumes the kubelet mounts before we start: a path that is not a
    # folder is a mistake in the manifest, not something that waiting would repair.
    for variable, folder in (
        ("PODLISTER_OUTPUT_DIR", settings.output_dir),
        ("PODLISTER_TEMPLATE_DIR", settings.template_dir),
    ):
        if folder is not None and not folder.is_dir():
            log.error("config_invalid", reason=f"{variable} {folder} is not a directory")
            return ExitCode.CONFIG
    try:
        connection = connect(environ)
    except ConnectionConfigError as exc:
        log.error("config_invalid", reason=str(exc))
        return ExitCode.CONFIG
    metrics = Metrics()
    template = _first_template(settings, metrics)
    _clean_output(settings)
    health = HealthState(stuck_after=_stuck_after(settings), metrics=metrics)
    try:
        server = HealthServer(
            host=settings.health_host, port=settings.health_port, state=health, metrics=metrics
        )
    except OSError as exc:
        log.error("health_bind_failed", port=settings.health_port, reason=str(exc))
        connection.close()
        return ExitCode.FAILURE
    previous = read_previous(
        settings.output_dir, service=settings.service, namespace=settings.namespace
    )
    if previous is not None:
        log.info("previous_page_served", addresses=len(previous.membership.ready))
        health.page_restored()
    publisher = Publisher(
        settings=settings,
        template=template,
        health=health,
        metrics=metrics,
        stop_event=stop,
        previous=previous,
    )
    watcher = _watcher(
        settings=settings,
        connection=connection,
        publisher=publisher,
        health=health,
        metrics=metrics,
        stop=stop,
    )
    return _serve(
        stop=stop,
        workers=_workers(
            settings=settings,
            template=template,
            publisher=publisher,
            watcher=watcher,
            health=health,
            metrics=metrics,
            stop=stop,
        ),
        server=server,
        connection=connection,
        stoppers=(watcher.stop, publisher.stop),
    )


def _serve(
    *,
    stop: threading.Event,
    workers: dict[str, Callable[[], None]],
    server: HealthServer,
    connection: Connection,
    stoppers: tuple[Callable[[], None], ...],
) -> int:
    """Run the workers until the stop event, then stop them within STOP_GRACE."""
    server.start()
    threads = Workers(stop)
    for name, target in workers.items():
        threads.start(name, target)
    # Everything alive now lives for the whole run: keep the collector off it, which keeps
    # collection pauses out of the event-to-file latency. (cli.main turned it off for the
    # start.)
    gc.collect()
    gc.freeze()
    gc.enable()

    # No timeout: the signals thread (or a worker that died) sets the event.
    stop.wait()
    code = ExitCode.FAILURE if threads.died else ExitCode.OK
    if threads.died:
        log.error("worker_died", workers=threads.died)
    else:
        log.info("stopping")
    for stopper in stoppers:
        stopper()
    threads.join(deadline=time.monotonic() + STOP_GRACE)
    server.stop()
    connection.close()
    log.info("stop", exit_code=code)
    return code
