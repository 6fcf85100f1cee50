"""The connection to the API server through the official client: its credentials, one GET.

Two kinds of GET (list and watch) whose bodies the sidecar parses itself: the client's
Configuration (host, a bearer token its loaders refresh) and REST layer (TLS, client
certificates, proxies), not its generated API classes (pydantic, every model imported).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import structlog
from kubernetes.client import rest
from kubernetes.client.configuration import Configuration
from kubernetes.config import incluster_config
from kubernetes.config.config_exception import ConfigException

from sidecar.api.errors import from_status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import urllib3

log = structlog.get_logger("sidecar.kube")
USER_AGENT = "podlister-sidecar/0.1.0"  # pyproject.toml's version (test_connection holds it)
Timeout = tuple[float, float]


class ConnectionConfigError(Exception):
    """Neither in-cluster config nor a kubeconfig could be loaded."""


class Connection:
    """GET requests to the API server, and a way to read its credentials again after a 401."""

    def __init__(self, configuration: Configuration, reload: Callable[[], None]) -> None:
        """Keep the configuration and the loader that can refresh its credentials."""
        self.configuration = configuration
        self._rest = rest.RESTClientObject(configuration)
        self._reload = reload

    @property
    def host(self) -> str:
        """The API server's URL."""
        return str(self.configuration.host)

    def get(
        self, path: str, query: Mapping[str, str], timeout: Timeout
    ) -> urllib3.BaseHTTPResponse:
        """The response to GET path?query, body unread; ApiError for any non-2xx."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        # auth_settings() reads the token through the refresh hook the loaders install
        # (the kubelet rotates projected tokens; exec plugins expire).
        bearer = self.configuration.auth_settings().get("BearerToken")
        if bearer and bearer["value"]:
            headers[bearer["key"]] = bearer["value"]
        url = f"{self.configuration.host}{quote(path)}?{urlencode(query)}"
        response = self._rest.request("GET", url, headers=headers, _request_timeout=timeout)  # type: ignore[no-untyped-call]
        raw: urllib3.BaseHTTPResponse = response.response
        if not 200 <= raw.status <= 299:  # noqa: PLR2004 - the 2xx range
            body = raw.read()
            raise from_status(raw.status, body, raw.headers, raw.reason)
        return raw

    def reload_credentials(self) -> None:
        """Read the token (or kubeconfig) again before the next request; failures are logged."""
        try:
            self._reload()
        except (ConfigException, OSError, ValueError) as exc:
            log.error("credentials_reload_failed", reason=str(exc))

    def close(self) -> None:
        """Release the client's connection pool."""
        self._rest.close()


def connect(environ: Mapping[str, str]) -> Connection:
    """In-cluster config when KUBERNETES_SERVICE_HOST is set, else the kubeconfig.

    Nothing here touches the network: the sidecar starts even when the API is down.
    """
    configuration = Configuration()
    in_cluster = bool(environ.get("KUBERNETES_SERVICE_HOST"))
    kubeconfig = environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        if in_cluster:
            reload = _in_cluster(configuration, environ)
        else:
            reload = _kubeconfig(configuration, environ.get("KUBECONFIG") or None)
        reload()
    except (ConfigException, OSError, ValueError) as exc:
        where = "in-cluster credentials" if in_cluster else f"no in-cluster variables; {kubeconfig}"
        msg = f"no Kubernetes API configuration ({where}): {exc}"
        raise ConnectionConfigError(msg) from exc
    # urllib3 would otherwise retry connection errors three times at once, hidden from our
    # backoff; every retry decision belongs to the watch loop.
    configuration.retries = False
    return Connection(configuration, reload)


def _in_cluster(configuration: Configuration, environ: Mapping[str, str]) -> Callable[[], None]:
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


def _kubeconfig(configuration: Configuration, path: str | None) -> Callable[[], None]:
    # Only outside a cluster: the whole client is imported then (api/client_import.py).
    from kubernetes.config import kube_config  # noqa: PLC0415

    def reload() -> None:
        # Re-reading picks up a rotated token, or a tokenFile's new content.
        kube_config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]

    return reload
