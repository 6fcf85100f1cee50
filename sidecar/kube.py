"""Connection to the API server through the official client: config loading only, no I/O."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import structlog
from kubernetes import client, config
from kubernetes.config import incluster_config

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


log = structlog.get_logger("sidecar.kube")


class ConnectionConfigError(Exception):
    """Neither in-cluster config nor a kubeconfig could be loaded."""


class Connection:
    """An API client, and a way to read its credentials again after a 401."""

    def __init__(self, api_client: client.ApiClient, reload: Callable[[], None]) -> None:
        """Keep the client and the loader that can refresh its credentials."""
        self.api_client = api_client
        self._reload = reload

    def reload_credentials(self) -> None:
        """Read the token (or kubeconfig) again before the next request; failures are logged."""
        try:
            self._reload()
        except (config.ConfigException, OSError, ValueError) as exc:
            log.error("credentials_reload_failed", reason=str(exc))

    def close(self) -> None:
        """Release the client's connection pool."""
        self.api_client.close()  # type: ignore[no-untyped-call]


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
    return Connection(client.ApiClient(configuration), reload)


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
