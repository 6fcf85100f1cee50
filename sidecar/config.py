"""Settings: read once from the environment (and matching flags) into one frozen object."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Where the kubelet puts the pod's namespace next to the service-account token.
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
Choice = TypeVar("Choice", bound=str)
# A Service name is a DNS-1035 label; anything else could change the label selector it is
# pasted into ("web,tier=x" selects another set). A namespace is a DNS-1123 label.
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# ASCII digits only: int() and float() also take full-width digits, and float() "1e3", "nan".
_DIGITS = re.compile(r"[0-9]{1,5}")
_SECONDS = re.compile(r"[0-9]{1,4}(\.[0-9]{1,3})?")


class ExitCode(enum.IntEnum):
    """The process's exit codes, part of the contract."""

    OK = 0
    FAILURE = 1  # a worker died: the kubelet restarts the container
    CONFIG = 2  # a bad setting or a broken template: fix the deployment


# SIGTERM (the kubelet) and SIGINT (Ctrl-C) stop the process. The others here would end it by
# default (unless it is a container's PID 1): nobody should with a stray kill -HUP.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
IGNORED_SIGNALS = frozenset(
    {
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
        signal.SIGVTALRM,
        signal.SIGPROF,
        signal.SIGPWR,
        signal.SIGIO,
        *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
    }
)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the sidecar is told from outside, validated."""

    service: str
    """Name of the Service whose EndpointSlices are watched (PODLISTER_SERVICE)."""
    namespace: str
    """Namespace of that Service (PODLISTER_NAMESPACE)."""
    output_dir: Path
    """Folder the pages are written into, the emptyDir nginx serves (PODLISTER_OUTPUT_DIR)."""
    template_dir: Path | None
    """Folder that may hold an ``index.html.j2`` replacing the packaged page."""
    pod_ip: str
    """IP of the pod this sidecar runs in, marked on the page; empty when unknown."""
    pod_name: str
    """Name of the pod this sidecar runs in; empty when unknown."""
    health_host: str
    """Address the health and metrics server binds to."""
    health_port: int
    """Port of the health and metrics server."""
    idle_timeout: float
    """Seconds a watch may deliver no bytes at all before it is abandoned and resumed."""
    watch_timeout: int
    """Upper bound in seconds of the timeout each watch asks the server for; the lower is half.

    client-go's Reflector asks for 5-10 minutes so that watches end and restart at
    different times across replicas; the default 600 gives exactly that range.
    """
    log_format: LogFormat
    """``json`` for machines, ``console`` for people."""
    log_level: LogLevel = "info"
    """The least severe lines logged: ``info`` logs one line per change, ``debug`` each write."""


# Each variable, its flag (the flag wins) and its help text.
OPTIONS = {
    "PODLISTER_SERVICE": ("--service", "the Service name (required)"),
    "PODLISTER_NAMESPACE": ("--namespace", "its namespace"),
    "PODLISTER_OUTPUT_DIR": ("--output-dir", "folder the pages are written to (required)"),
    "PODLISTER_TEMPLATE_DIR": ("--template-dir", "folder holding index.html.j2"),
    "PODLISTER_POD_IP": ("--pod-ip", "this pod's IP, marked on the page"),
    "PODLISTER_POD_NAME": ("--pod-name", "this pod's name, marked on the page"),
    "PODLISTER_HEALTH_ADDR": ("--health-addr", "host:port of /healthz /readyz /metrics"),
    "PODLISTER_IDLE_TIMEOUT": ("--idle-timeout", "seconds of silence before re-watching"),
    "PODLISTER_WATCH_TIMEOUT": ("--watch-timeout", "max seconds a watch asks the server for"),
    "PODLISTER_LOG_FORMAT": ("--log-format", "json or console"),
    "PODLISTER_LOG_LEVEL": ("--log-level", "debug, info, warning or error"),
}


def _parse_flags(argv: Sequence[str]) -> dict[str, str]:
    """Map each given flag back to its variable name, so flags and variables share one path."""
    parser = argparse.ArgumentParser(
        prog="podlister-sidecar",
        description="Keep index.html/json/txt listing a Service's ready pod IPs.",
        epilog="Every flag has a PODLISTER_* variable; the flag wins.",
    )
    for variable, (flag, text) in OPTIONS.items():
        parser.add_argument(flag, dest=variable, help=f"{text} [{variable}]")
    given = vars(parser.parse_args(list(argv)))
    return {name: value for name, value in given.items() if value is not None}


def _invalid(variable: str, expected: str, value: str) -> ConfigError:
    return ConfigError(f"{variable} must be {expected}, got {value!r}")


def _health_addr(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        ip = None
    if not sep or not _DIGITS.fullmatch(port) or not 0 < int(port) < 65536 or ip is None:  # noqa: PLR2004
        raise _invalid("PODLISTER_HEALTH_ADDR", "IP:port or [IPv6]:port", value)
    if ip.version == 6 and not bracketed:  # noqa: PLR2004
        raise _invalid("PODLISTER_HEALTH_ADDR", "a bracketed IPv6 address ([::]:8081)", value)
    return str(ip), int(port)


def _label(variable: str, value: str, pattern: re.Pattern[str], kind: str) -> str:
    if not pattern.fullmatch(value):
        raise _invalid(variable, f"a {kind} (lower-case letters, digits, '-')", value)
    return value


def _idle_timeout(value: str) -> float:
    if not _SECONDS.fullmatch(value) or not 0 < float(value) <= 3600:  # noqa: PLR2004
        raise _invalid("PODLISTER_IDLE_TIMEOUT", "seconds in (0, 3600]", value)
    return float(value)


def _watch_timeout(value: str) -> int:
    if not _DIGITS.fullmatch(value) or not 2 <= int(value) <= 3600:  # noqa: PLR2004
        raise _invalid("PODLISTER_WATCH_TIMEOUT", "whole seconds in [2, 3600]", value)
    return int(value)


def _pod_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value)) if value else ""
    except ValueError:
        raise _invalid("PODLISTER_POD_IP", "an IP address", value) from None


def _choice(variable: str, value: str, choices: Sequence[Choice]) -> Choice:
    for choice in choices:
        if value == choice:
            return choice
    raise _invalid(variable, f"one of {', '.join(choices)}", value)


def load_settings(
    environ: Mapping[str, str],
    argv: Sequence[str] = (),
    *,
    namespace_file: Path = IN_CLUSTER_NAMESPACE_FILE,
    stdout_is_tty: bool | None = None,
) -> Settings:
    """Build the settings from variables and flags; ConfigError naming the bad one."""
    values = {k: v.strip() for k, v in environ.items() if k.startswith("PODLISTER_")}
    values.update((k, v.strip()) for k, v in _parse_flags(argv).items())
    for variable in ("PODLISTER_SERVICE", "PODLISTER_OUTPUT_DIR"):
        if not values.get(variable):
            msg = f"{variable} is required"
            raise ConfigError(msg)
    try:
        default_namespace = namespace_file.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        default_namespace = "default"
    tty = sys.stdout.isatty() if stdout_is_tty is None else stdout_is_tty
    host, port = _health_addr(values.get("PODLISTER_HEALTH_ADDR") or "[::]:8081")
    template_dir = values.get("PODLISTER_TEMPLATE_DIR")
    return Settings(
        service=_label(
            "PODLISTER_SERVICE", values["PODLISTER_SERVICE"], _DNS_1035_LABEL, "DNS-1035 label"
        ),
        namespace=_label(
            "PODLISTER_NAMESPACE",
            values.get("PODLISTER_NAMESPACE") or default_namespace,
            _DNS_1123_LABEL,
            "DNS-1123 label",
        ),
        output_dir=Path(values["PODLISTER_OUTPUT_DIR"]),
        template_dir=Path(template_dir) if template_dir else None,
        pod_ip=_pod_ip(values.get("PODLISTER_POD_IP", "")),
        pod_name=values.get("PODLISTER_POD_NAME", ""),
        health_host=host,
        health_port=port,
        idle_timeout=_idle_timeout(values.get("PODLISTER_IDLE_TIMEOUT", "90")),
        watch_timeout=_watch_timeout(values.get("PODLISTER_WATCH_TIMEOUT", "600")),
        log_format=_choice(
            "PODLISTER_LOG_FORMAT",
            values.get("PODLISTER_LOG_FORMAT") or ("console" if tty else "json"),
            ("json", "console"),
        ),
        log_level=_choice(
            "PODLISTER_LOG_LEVEL", values.get("PODLISTER_LOG_LEVEL", "info").lower(), LOG_LEVELS
        ),
    )
