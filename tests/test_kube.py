"""The API connection: loaded without touching the network, credentials read again on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from sidecar.kube import ConnectionConfigError, connect
from support.sidecar_process import write_kubeconfig

if TYPE_CHECKING:
    from pathlib import Path


def test_a_kubeconfig_is_read_again_with_its_new_token(tmp_path: Path) -> None:
    """reload_credentials() picks up a token the kubeconfig now holds (a rotation)."""
    path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", token="first")
    connection = connect({"KUBECONFIG": str(path)})
    configuration = connection.api_client.configuration
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
    assert connection.api_client.configuration.api_key["BearerToken"] == "Bearer first"
    connection.close()


def test_no_configuration_is_a_clear_error(tmp_path: Path) -> None:
    """Neither in-cluster variables nor a readable kubeconfig: ConnectionConfigError."""
    with pytest.raises(ConnectionConfigError, match="no Kubernetes API configuration"):
        connect({"KUBECONFIG": str(tmp_path / "absent")})
