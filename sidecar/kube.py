"""Connection to the API server through the official client: its credentials, and one GET.

The client's generated API classes (DiscoveryV1Api, CoreV1Api) and their ApiClient are not
used: they validate every call and import pydantic and every model they name, ~12 MiB and
~0.18 s at start, for two GET requests whose bodies we parse ourselves. What they did for a
GET is done in ``Connection.get``: the client's Configuration supplies the host and the
bearer token (its refresh hook runs on every read, as before), and the client's REST layer
makes the request (TLS, client certificates, proxies) and raises its ApiException.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import structlog
from kubernetes import client, config
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config

from sidecar import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import urllib3


log = structlog.get_logger("sidecar.kube")


class ConnectionConfigError(Exception):
    """Neither in-cluster config nor a kubeconfig could be loaded."""


USER_AGENT = f"podlister-sidecar/{__version__}"
Timeout = tuple[float, float]


class Connection:
    """GET requests to the API server, and a way to read its credentials again after a 401."""

    def __init__(self, configuration: client.Configuration, reload: Callable[[], None]) -> None:
        """Keep the configuration and the loader that can refresh its credentials."""
        self.configuration = configuration
        self._rest = rest.RESTClientObject(configuration)
        self._reload = reload

    def get(
        self, path: str, query: Mapping[str, str], timeout: Timeout
    ) -> urllib3.BaseHTTPResponse:
        """The response to GET path?query, its body unread; ApiException for any non-2xx.

        As the generated client does for a call with ``_preload_content=False``: the body of
        an error is read so that the exception carries it, the body of a success is not.
        """
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        # auth_settings() reads the token through the refresh hook the loaders install
        # (the kubelet rotates projected tokens; exec plugins expire).
        bearer = self.configuration.auth_settings().get("BearerToken")
        if bearer and bearer["value"]:
            headers[bearer["key"]] = bearer["value"]
        url = f"{self.configuration.host}{quote(path)}?{urlencode(query)}"
        response = self._rest.request("GET", url, headers=headers, _request_timeout=timeout)  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:  # noqa: PLR2004 - the 2xx range
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        raw: urllib3.BaseHTTPResponse = response.response
        return raw

    def reload_credentials(self) -> None:
        """Read the token (or kubeconfig) again before the next request; failures are logged."""
        try:
            self._reload()
        except (config.ConfigException, OSError, ValueError) as exc:
            log.error("credentials_reload_failed", reason=str(exc))

    def close(self) -> None:
        """Release the client's connection pool."""
        self._rest.close()


def connect(environ: Mapping[str, str]) -> Connection:
    """In-cluster config when KUBERNETES_SERVICE_HOST is set, else the standard kubeconfig.

    Nothing here touches the network, so the sidecar starts even when the API is down.
    """
    configuration = client.Configuration()
    try:
        if environ.get("KUBERNETES_SERVICE_HOST"):
            reload = _in_cluster(configuration, environ)
        else:
            reload = _kubeconfig(configuration, environ.get("KUBECONFIG") or None)
        reload()
    except (config.ConfigException, OSError, ValueError) as exc:
        msg = f"no Kubernetes API configuration: {exc}"
        raise ConnectionConfigError(msg) from exc
    # urllib3 would otherwise retry connection errors three times at once, hidden from our
    # backoff; every retry decision belongs to the watch loop.
    configuration.retries = False
    return Connection(configuration, reload)


def _in_cluster(
    configuration: client.Configuration, environ: Mapping[str, str]
) -> Callable[[], None]:
    loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=incluster_config.SERVICE_TOKEN_FILENAME,
        cert_filename=incluster_config.SERVICE_CERT_FILENAME,
        environ=environ,
    )
    loaded = False

    def reload() -> None:
        nonlocal loaded
        if not loaded:
            # Installs the client's hook that re-reads the projected token as the kubelet
            # rotates it, but only once a minute.
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
            loaded = True
        else:
            # After a 401: make the hook read the token file at the very next request.
            # Naive, as the client compares it with a naive datetime.now().
            loader.token_expires_at = dt.datetime.min  # noqa: DTZ901

    return reload


def _kubeconfig(configuration: client.Configuration, path: str | None) -> Callable[[], None]:
    def reload() -> None:
        # Re-reading picks up a rotated token, or a tokenFile's new content.
        config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]

    return reload
