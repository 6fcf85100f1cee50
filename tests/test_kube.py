"""The API connection: loaded without touching the network, credentials read again on demand."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from kubernetes.client.exceptions import ApiException

from kubestub import ApiStandIn, endpoint, endpoint_slice
from sidecar.kube import ConnectionConfigError, connect
from support.sidecar_process import write_kubeconfig

SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"

if TYPE_CHECKING:
    from pathlib import Path


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


def test_get_sends_the_token_and_the_query_and_leaves_the_body_unread(tmp_path: Path) -> None:
    """Connection.get does what the generated API call did: the bearer token from the
    client's configuration, the query as given, and the response handed back unread.
    """
    with ApiStandIn() as api:
        api.require_token("secret")
        api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.1")]))
        path = write_kubeconfig(tmp_path / "kc", api.url, token="secret")
        connection = connect({"KUBECONFIG": str(path)})
        query = {"labelSelector": "kubernetes.io/service-name=web", "limit": "500"}
        response = connection.get(SLICES, query, (5.0, 5.0))
        body = json.loads(response.read())
        response.release_conn()
        connection.close()
        (request,) = api.requests_for("list")
    assert [item["metadata"]["name"] for item in body["items"]] == ["web-a"]
    assert request.params == query


def test_get_raises_the_clients_exception_with_the_status_body(tmp_path: Path) -> None:
    """A non-2xx answer is the client's ApiException (here its 401 subclass), carrying the
    status and the body, which is what api_errors.classify reads.
    """
    with ApiStandIn() as api:
        api.require_token("secret")
        path = write_kubeconfig(tmp_path / "kc", api.url, token="wrong")
        connection = connect({"KUBECONFIG": str(path)})
        with pytest.raises(ApiException) as raised:
            connection.get(SLICES, {}, (5.0, 5.0))
        connection.close()
    assert raised.value.status == 401
    assert json.loads(raised.value.body or "{}")["reason"] == "Unauthorized"
