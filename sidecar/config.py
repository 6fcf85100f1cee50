"""Settings: read once from the environment (and matching flags) into one frozen object."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Where the kubelet puts the pod's namespace next to the service-account token.
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")

# A Service name is a DNS-1035 label; anything else could change the label selector it is
# pasted into ("web,tier=x" selects another set).
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# A namespace is a DNS-1123 label.
_DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DEFAULT_HEALTH_ADDR = "[::]:8081"


def decimal(text: str) -> int | None:
    """The value of a string of ASCII digits 0-9, else None.

    ``str.isdigit`` accepts "²" and other digits that ``int`` then refuses.
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


class ExitCode(enum.IntEnum):
    """The process's exit codes, part of the contract."""

    OK = 0
    FAILURE = 1  # a worker died: the kubelet restarts the container
    CONFIG = 2  # a bad setting or a broken template: fix the deployment


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
    """Folder that may hold an ``index.html.j2`` overriding the packaged page."""

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


@dataclasses.dataclass(frozen=True)
class _Option:
    env: str
    flag: str
    help: str


_OPTIONS = (
    _Option("PODLISTER_SERVICE", "--service", "the Service name (required)"),
    _Option("PODLISTER_NAMESPACE", "--namespace", "its namespace"),
    _Option("PODLISTER_OUTPUT_DIR", "--output-dir", "folder the pages are written to (required)"),
    _Option("PODLISTER_TEMPLATE_DIR", "--template-dir", "folder holding index.html.j2"),
    _Option("PODLISTER_POD_IP", "--pod-ip", "this pod's IP, marked on the page"),
    _Option("PODLISTER_POD_NAME", "--pod-name", "this pod's name, marked on the page"),
    _Option("PODLISTER_HEALTH_ADDR", "--health-addr", "host:port of /healthz /readyz /metrics"),
    _Option("PODLISTER_IDLE_TIMEOUT", "--idle-timeout", "seconds of silence before re-watching"),
    _Option(
        "PODLISTER_WATCH_TIMEOUT", "--watch-timeout", "max seconds a watch asks the server for"
    ),
    _Option("PODLISTER_LOG_FORMAT", "--log-format", "json or console"),
    _Option("PODLISTER_LOG_LEVEL", "--log-level", "debug, info, warning or error"),
)


def _parse_flags(argv: Sequence[str]) -> dict[str, str]:
    """Map each given flag back to its variable name, so flags and variables share one path."""
    parser = argparse.ArgumentParser(
        prog="podlister-sidecar",
        description="Keep index.html/json/txt listing a Service's ready pod IPs.",
        epilog="Every flag has a PODLISTER_* variable; the flag wins.",
    )
    for option in _OPTIONS:
        parser.add_argument(option.flag, dest=option.env, help=f"{option.help} [{option.env}]")
    given = vars(parser.parse_args(list(argv)))
    return {name: value for name, value in given.items() if value is not None}


def _default_namespace(namespace_file: Path) -> str:
    try:
        return namespace_file.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def _health_addr(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    port = decimal(port_text)
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        ip = ipaddress.ip_address(host) if host else None
    except ValueError:
        ip = None
    if not sep or port is None or not 0 < port < 65536 or ip is None:  # noqa: PLR2004
        msg = f"PODLISTER_HEALTH_ADDR must be IP:port or [IPv6]:port, got {value!r}"
        raise ConfigError(msg)
    if ip.version == 6 and not bracketed:  # noqa: PLR2004
        msg = f"PODLISTER_HEALTH_ADDR must bracket an IPv6 address ([::]:8081), got {value!r}"
        raise ConfigError(msg)
    return str(ip), port


def _label(name: str, value: str, pattern: re.Pattern[str], kind: str) -> str:
    if not pattern.fullmatch(value):
        msg = f"{name} must be a {kind} (lower-case letters, digits, '-'), got {value!r}"
        raise ConfigError(msg)
    return value


def _idle_timeout(value: str) -> float:
    # ASCII digits only: float() also takes full-width digits, "1e3" and "nan".
    seconds = float(value) if re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", value) else -1.0
    if not 0 < seconds <= 3600:  # noqa: PLR2004
        msg = f"PODLISTER_IDLE_TIMEOUT must be seconds in (0, 3600], got {value!r}"
        raise ConfigError(msg)
    return seconds


def _watch_timeout(value: str) -> int:
    seconds = decimal(value) or 0
    if not 2 <= seconds <= 3600:  # noqa: PLR2004
        msg = f"PODLISTER_WATCH_TIMEOUT must be whole seconds in [2, 3600], got {value!r}"
        raise ConfigError(msg)
    return seconds


def _pod_ip(value: str) -> str:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            msg = f"PODLISTER_POD_IP must be an IP address, got {value!r}"
            raise ConfigError(msg) from None
    return value


def _log_format(value: str | None, *, stdout_is_tty: bool) -> LogFormat:
    if value is None:
        return "console" if stdout_is_tty else "json"
    if value == "json":
        return "json"
    if value == "console":
        return "console"
    msg = f"PODLISTER_LOG_FORMAT must be json or console, got {value!r}"
    raise ConfigError(msg)


def _log_level(value: str) -> LogLevel:
    for level in LOG_LEVELS:
        if value == level:
            return level
    msg = f"PODLISTER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {value!r}"
    raise ConfigError(msg)


def load_settings(
    environ: Mapping[str, str],
    argv: Sequence[str] = (),
    *,
    namespace_file: Path = IN_CLUSTER_NAMESPACE_FILE,
    stdout_is_tty: bool | None = None,
) -> Settings:
    """Build the settings from variables and flags; raise ConfigError naming the bad one."""
    values = {k: v for k, v in environ.items() if k.startswith("PODLISTER_")}
    values.update(_parse_flags(argv))

    def required(name: str) -> str:
        value = values.get(name, "").strip()
        if not value:
            msg = f"{name} is required"
            raise ConfigError(msg)
        return value

    service = _label(
        "PODLISTER_SERVICE", required("PODLISTER_SERVICE"), _DNS_1035_LABEL, "DNS-1035 label"
    )
    output_dir = Path(required("PODLISTER_OUTPUT_DIR"))
    template_text = values.get("PODLISTER_TEMPLATE_DIR", "").strip()
    health_host, health_port = _health_addr(
        values.get("PODLISTER_HEALTH_ADDR", DEFAULT_HEALTH_ADDR).strip()
    )
    if stdout_is_tty is None:
        stdout_is_tty = sys.stdout.isatty()
    return Settings(
        service=service,
        namespace=_label(
            "PODLISTER_NAMESPACE",
            values.get("PODLISTER_NAMESPACE", "").strip() or _default_namespace(namespace_file),
            _DNS_1123_LABEL,
            "DNS-1123 label",
        ),
        output_dir=output_dir,
        template_dir=Path(template_text) if template_text else None,
        pod_ip=_pod_ip(values.get("PODLISTER_POD_IP", "").strip()),
        pod_name=values.get("PODLISTER_POD_NAME", "").strip(),
        health_host=health_host,
        health_port=health_port,
        idle_timeout=_idle_timeout(values.get("PODLISTER_IDLE_TIMEOUT", "90")),
        watch_timeout=_watch_timeout(values.get("PODLISTER_WATCH_TIMEOUT", "600").strip()),
        log_format=_log_format(values.get("PODLISTER_LOG_FORMAT"), stdout_is_tty=stdout_is_tty),
        log_level=_log_level(values.get("PODLISTER_LOG_LEVEL", "info").strip().lower()),
    )
