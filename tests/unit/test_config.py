"""Settings: one frozen object from variables and flags, clear errors naming the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_settings

BASE = {"PODLISTER_SERVICE": "web", "PODLISTER_OUTPUT_DIR": "/out"}


def test_defaults() -> None:
    """Only the two required variables give the documented defaults."""
    settings = load_settings(BASE, namespace_file=Path("/nonexistent"), stdout_is_tty=False)
    assert settings.service == "web"
    assert settings.namespace == "default"
    assert settings.output_dir == Path("/out")
    assert settings.template_dir is None
    # Both families where the host has them: "::" with IPV6_V6ONLY off takes IPv4 too.
    assert (settings.health_host, settings.health_port) == ("::", 8081)
    assert settings.idle_timeout == 90.0
    assert settings.watch_timeout == 600
    assert settings.log_format == "json"


def test_settings_are_frozen() -> None:
    """The settings object cannot be changed after it is read."""
    settings = load_settings(BASE, namespace_file=Path("/nonexistent"), stdout_is_tty=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.service = "other"  # type: ignore[misc]


@pytest.mark.parametrize("missing", ["PODLISTER_SERVICE", "PODLISTER_OUTPUT_DIR"])
def test_required_variable_missing(missing: str) -> None:
    """A missing required variable is an error that names it."""
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_settings(env, namespace_file=Path("/nonexistent"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PODLISTER_HEALTH_ADDR", "8081"),
        ("PODLISTER_HEALTH_ADDR", "host:99999"),
        ("PODLISTER_IDLE_TIMEOUT", "soon"),
        ("PODLISTER_IDLE_TIMEOUT", "0"),
        ("PODLISTER_WATCH_TIMEOUT", "1"),
        ("PODLISTER_WATCH_TIMEOUT", "2.5"),
        ("PODLISTER_LOG_FORMAT", "xml"),
        ("PODLISTER_POD_IP", "10.0.0.300"),
        ("PODLISTER_HEALTH_ADDR", "127.0.0.1:²"),
        ("PODLISTER_HEALTH_ADDR", "127.0.0.1:\uff18\uff10\uff18\uff11"),
        ("PODLISTER_HEALTH_ADDR", "::1:8081"),
        ("PODLISTER_HEALTH_ADDR", "localhost:8081"),
        ("PODLISTER_WATCH_TIMEOUT", "\uff16\uff10"),
        ("PODLISTER_WATCH_TIMEOUT", "²"),
        ("PODLISTER_IDLE_TIMEOUT", "\uff11\uff10"),
        ("PODLISTER_IDLE_TIMEOUT", "nan"),
        ("PODLISTER_IDLE_TIMEOUT", "1e3"),
        ("PODLISTER_SERVICE", "web,tier=x"),
        ("PODLISTER_SERVICE", "Web"),
        ("PODLISTER_SERVICE", "1web"),
        ("PODLISTER_SERVICE", "w" * 64),
        ("PODLISTER_NAMESPACE", "shop)"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    """An invalid value is an error naming the variable and quoting the value: non-ASCII digits
    that str.isdigit() accepts, a Service name that would change the label selector, an IPv6
    address without brackets.
    """
    with pytest.raises(ConfigError, match=variable):
        load_settings({**BASE, variable: value}, namespace_file=Path("/nonexistent"))


def test_namespace_from_in_cluster_file(tmp_path: Path) -> None:
    """Without PODLISTER_NAMESPACE the namespace comes from the service-account folder."""
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("shop\n")
    settings = load_settings(BASE, namespace_file=namespace_file, stdout_is_tty=False)
    assert settings.namespace == "shop"


def test_flags_override_variables() -> None:
    """A flag wins over its variable."""
    settings = load_settings(
        {**BASE, "PODLISTER_NAMESPACE": "a"},
        [
            *("--namespace", "b", "--health-addr", "[::1]:9000"),
            *("--idle-timeout", "2.5", "--watch-timeout", "30"),
        ],
        namespace_file=Path("/nonexistent"),
        stdout_is_tty=False,
    )
    assert settings.namespace == "b"
    assert (settings.health_host, settings.health_port) == ("::1", 9000)
    assert settings.idle_timeout == 2.5
    assert settings.watch_timeout == 30


def test_console_logs_on_a_terminal() -> None:
    """Without PODLISTER_LOG_FORMAT, a terminal gets console logs."""
    settings = load_settings(BASE, namespace_file=Path("/nonexistent"), stdout_is_tty=True)
    assert settings.log_format == "console"
