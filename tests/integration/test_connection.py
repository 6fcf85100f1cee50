"""The API connection's GET against the stand-in: token and query sent, errors typed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from kubestub import ApiStandIn, endpoint, endpoint_slice
from sidecar.api.connection import USER_AGENT, connect
from sidecar.api.errors import ApiError
from sidecar.metrics import ErrorKind
from support.sidecar_process import write_kubeconfig

SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"

if TYPE_CHECKING:
    from pathlib import Path


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
    assert request.user_agent == USER_AGENT


def test_get_raises_an_api_error_with_the_status_and_message(tmp_path: Path) -> None:
    """A non-2xx answer is an ApiError of its kind (here unauthorized), carrying the status
    and the Status body's message, which is what the watch loop's policy reads.
    """
    with ApiStandIn() as api:
        api.require_token("secret")
        path = write_kubeconfig(tmp_path / "kc", api.url, token="wrong")
        connection = connect({"KUBECONFIG": str(path)})
        with pytest.raises(ApiError) as raised:
            connection.get(SLICES, {}, (5.0, 5.0))
        connection.close()
    assert raised.value.kind is ErrorKind.UNAUTHORIZED
    assert raised.value.status == 401
    assert str(raised.value)
