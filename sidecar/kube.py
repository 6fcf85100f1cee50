"""Connection to the API server through the official client: config loading only, no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubernetes import client, config

if TYPE_CHECKING:
    from collections.abc import Mapping


class ConnectionConfigError(Exception):
    """Neither in-cluster config nor a kubeconfig could be loaded."""


def api_client(environ: Mapping[str, str]) -> client.ApiClient:
    """In-cluster config when KUBERNETES_SERVICE_HOST is set, else the standard kubeconfig.

    Nothing here touches the network, so the sidecar starts even when the API is down.
    """
    configuration = client.Configuration()
    try:
        if environ.get("KUBERNETES_SERVICE_HOST"):
            # Re-reads the projected token as the kubelet rotates it.
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        msg = f"no Kubernetes API configuration: {exc}"
        raise ConnectionConfigError(msg) from exc
    # urllib3 would otherwise retry connection errors three times at once, hidden from our
    # backoff; every retry decision belongs to the watch loop.
    configuration.retries = False
    return client.ApiClient(configuration)
