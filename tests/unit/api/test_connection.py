"""The API connection: loaded without touching the network, credentials read again on demand."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sidecar.api.connection import USER_AGENT, Connection, ConnectionConfigError, connect
from support.sidecar_process import write_kubeconfig

REPO = Path(__file__).resolve().parents[3]


def test_a_kubeconfig_is_read_again_with_its_new_token(tmp_path: Path) -> None:
    """reload_credentials() picks up a token the kubeconfig now holds (a rotation)."""
    path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", token="first")
    connection = connect({"KUBECONFIG": str(path)})
    configuration = connection.configuration
    assert configuration.api_key["BearerToken"] == "Bearer first"
    write_kubeconfig(path, "http://127.0.0.1:1", token="second")
    connection.reload_credentials()
    assert configuration.api_key["BearerToken"] == "Bearer second"
    connection.close()


def test_a_failed_reload_is_logged_and_keeps_the_old_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kubeconfig gone at reload time is logged; nothing is raised into the watch loop."""
    path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", token="first")
    connection = connect({"KUBECONFIG": str(path)})
    path.unlink()
    connection.reload_credentials()
    assert "credentials_reload_failed" in capsys.readouterr().out
    assert connection.configuration.api_key["BearerToken"] == "Bearer first"
    connection.close()


def test_no_configuration_is_a_clear_error(tmp_path: Path) -> None:
    """Neither in-cluster variables nor a readable kubeconfig: ConnectionConfigError."""
    with pytest.raises(ConnectionConfigError, match="no Kubernetes API configuration"):
        connect({"KUBECONFIG": str(tmp_path / "absent")})


def bearer(connection: Connection) -> str:
    """The Authorization header the next request sends, as the client's hook gives it."""
    return str(connection.configuration.auth_settings()["BearerToken"]["value"]).lower()


def test_in_cluster_credentials_come_from_the_service_account_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With KUBERNETES_SERVICE_HOST set, the host comes from the variables and the token from
    the projected file; after a 401 the file is read again at the next request.
    """
    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("first")
    ca.write_text("not read before a TLS request")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    connection = connect({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert connection.host == "https://10.96.0.1:443"
    assert bearer(connection) == "bearer first"
    token.write_text("second")
    connection.reload_credentials()
    assert bearer(connection) == "bearer second"
    connection.close()


def test_the_user_agent_names_the_released_version() -> None:
    """The User-Agent (seen in the API server's audit log) carries pyproject.toml's version."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert f"podlister-sidecar/{project['version']}" == USER_AGENT
