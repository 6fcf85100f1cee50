"""Wiring: settings, one stop event, the worker threads, and an orderly exit within 2 s."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from sidecar.api.connection import ConnectionConfigError, connect
from sidecar.api.listwatch import CONNECT_TIMEOUT, ListerWatcher
from sidecar.api.policy import Streak
from sidecar.api.reflector import Reflector
from sidecar.backoff import DEFAULT_CAP, Backoff
from sidecar.config import (
    IGNORED_SIGNALS,
    OPTIONS,
    STOP_SIGNALS,
    ConfigError,
    ExitCode,
    load_settings,
)
from sidecar.health.server import HealthServer
from sidecar.health.state import HealthState
from sidecar.logs import configure_logging
from sidecar.metrics import Metrics
from sidecar.page.previous import read_previous
from sidecar.page.publish import Publisher
from sidecar.page.render import PackagedPage
from sidecar.page.write import remove_stale_temps

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sidecar.api.connection import Connection
    from sidecar.config import Settings

log = structlog.get_logger("sidecar")
STOP_GRACE = 1.5  # seconds; the whole exit must fit in the 2 s the contract promises
# Each worker thread's loop, and how to make it return.
Worker = tuple["Callable[[], None]", "Callable[[], None]"]


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    client_fallback: str | None = None,
) -> int:
    """Read the settings, then run until SIGTERM/SIGINT (``client_fallback``: see __main__)."""
    environ = os.environ if environ is None else environ
    try:
        settings = load_settings(environ, sys.argv[1:] if argv is None else argv)
        # In a pod both are volumes mounted before we start: a path that is not a folder is
        # a mistake in the manifest, not something that waiting would repair.
        for variable, folder in (
            ("PODLISTER_OUTPUT_DIR", settings.output_dir),
            ("PODLISTER_TEMPLATE_DIR", settings.template_dir),
        ):
            if folder is not None and not folder.is_dir():
                msg = f"{variable} {folder} is not a directory"
                raise ConfigError(msg)  # noqa: TRY301 - one way out for every bad setting
    except ConfigError as exc:
        print(f"podlister-sidecar: {exc}", file=sys.stderr)  # noqa: T201 - before logging exists
        return ExitCode.CONFIG
    configure_logging(settings.log_format, settings.log_level)
    if client_fallback is not None:
        log.warning("client_import_fallback", reason=client_fallback, using="import kubernetes")
    unknown = sorted(k for k in environ if k.startswith("PODLISTER_") and k not in OPTIONS)
    if unknown:
        log.warning("unknown_settings", variables=unknown, known=sorted(OPTIONS))
    stop = threading.Event()
    _take_signals(stop)
    return run(settings, environ, stop)


def _take_signals(stop: threading.Event) -> None:
    """Turn signals into the stop event without any Python signal handler.

    A handler runs in the main thread between any two bytecodes, including inside
    ``stop.set()`` (the main thread calls it while stopping, holding the event's lock); a
    handler that sets the event there would wait for that lock forever. Instead the signals
    are blocked in every thread (threads inherit the mask, so this runs before any is
    started) and one thread waits for them with sigwait. They stay blocked to the end: one
    that comes while the interpreter shuts down is never acted on (exit 0, not 143).
    """
    watched = STOP_SIGNALS | IGNORED_SIGNALS
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)

    def wait_for_signals() -> None:
        while True:
            signum = signal.sigwait(watched)
            stopping = signum in STOP_SIGNALS
            if not (stopping and stop.is_set()):
                action = "stop" if stopping else "ignored"
                log.info("signal", signal=_name(signum), action=action)
            if stopping:
                stop.set()

    threading.Thread(target=wait_for_signals, name="signals", daemon=True).start()


def _name(signum: int) -> str:
    """SIGHUP, ..., or SIGRTMIN+n for a real-time signal (those have no name of their own)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


def run(settings: Settings, environ: Mapping[str, str], stop: threading.Event) -> int:
    """Start everything, wait for the stop event or a dead worker, then stop everything."""
    log.info(
        "start",
        **{
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()
        },
    )
    try:
        connection = connect(environ)
    except ConnectionConfigError as exc:
        log.error("config_invalid", reason=str(exc))
        return ExitCode.CONFIG
    metrics = Metrics()
    # Stuck: no beat for twice the longest legitimate block of the watch (a read, a
    # connect and a backoff step). An unreachable API is not stuck: it beats every retry.
    stuck_after = 2 * (settings.idle_timeout + CONNECT_TIMEOUT + DEFAULT_CAP)
    health = HealthState(stuck_after=stuck_after, metrics=metrics)
    try:
        server = HealthServer(
            host=settings.health_host, port=settings.health_port, state=health, metrics=metrics
        )
    except OSError as exc:
        log.error("health_bind_failed", port=settings.health_port, reason=str(exc))
        connection.close()
        return ExitCode.FAILURE
    workers = _workers(settings, connection, health=health, metrics=metrics, stop=stop)
    server.start()
    code = _serve(stop, workers)
    server.stop()
    connection.close()
    log.info("stop", exit_code=code)
    return code


def _workers(
    settings: Settings,
    connection: Connection,
    *,
    health: HealthState,
    metrics: Metrics,
    stop: threading.Event,
) -> dict[str, Worker]:
    """The publisher, the watch and (with a template folder) the template watcher."""
    try:
        removed = remove_stale_temps(settings.output_dir)  # a killed predecessor's
    except OSError as exc:  # reported, not fatal: the writes will say more
        log.error("output_dir_unusable", path=str(settings.output_dir), reason=str(exc))
    else:
        if removed:
            log.info("stale_temps_removed", files=removed)
    previous = read_previous(
        settings.output_dir, service=settings.service, namespace=settings.namespace
    )
    if previous is not None:
        log.info("previous_page_served", addresses=len(previous.membership.ready))
        health.page_restored()
    publisher = Publisher(
        settings=settings,
        packaged=PackagedPage(),
        health=health,
        metrics=metrics,
        stop_event=stop,
        previous=previous,
    )
    reflector = Reflector(
        source=ListerWatcher(
            connection=connection,
            service=settings.service,
            namespace=settings.namespace,
            idle_timeout=settings.idle_timeout,
        ),
        sink=publisher,
        streak=Streak(
            metrics=metrics, backoff=Backoff(), host=connection.host, namespace=settings.namespace
        ),
        watch_timeout=settings.watch_timeout,
        health=health,
        metrics=metrics,
        stop_event=stop,
    )
    workers = {"publish": (publisher.run, publisher.stop), "watch": (reflector.run, reflector.stop)}
    if settings.template_dir is not None:
        # Only with a template folder: the sandbox and its child cost nothing otherwise.
        from sidecar.configmap.reload import watch_templates  # noqa: PLC0415

        reload = functools.partial(
            watch_templates,
            template_dir=settings.template_dir,
            sink=publisher,
            health=health,
            metrics=metrics,
            stop_event=stop,
        )
        workers["templates"] = (reload, stop.set)
    return workers


def _serve(stop: threading.Event, workers: dict[str, Worker]) -> int:
    """Run each worker in a thread until the stop event, then stop them within STOP_GRACE.

    A worker that ends before the stop event is a bug: it sets the event and the process
    exits 1, for the kubelet to restart it. Being told, rather than checking the threads
    every second, keeps the idle process from waking at all.
    """
    died: list[str] = []

    def guarded(name: str, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Exception:
            log.exception("worker_crashed", worker=name)
        finally:
            if not stop.is_set():
                died.append(name)
                stop.set()

    threads = [
        threading.Thread(target=guarded, args=(name, loop), name=name, daemon=True)
        for name, (loop, _) in workers.items()
    ]
    for thread in threads:
        thread.start()
    stop.wait()  # no timeout: the signals thread (or a worker that died) sets it
    if died:
        log.error("worker_died", workers=died)
    else:
        log.info("stopping")
    for _, stopper in workers.values():
        stopper()
    deadline = time.monotonic() + STOP_GRACE
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return ExitCode.FAILURE if died else ExitCode.OK
