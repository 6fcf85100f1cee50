"""Builders for the API objects the stand-in serves, shaped as the real API returns them."""

from __future__ import annotations

from typing import Any


def endpoint(
    address: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    pod: str | None = None,
    node: str | None = None,
    hostname: str | None = None,
    zone: str | None = None,
) -> dict[str, Any]:
    """One entry of an EndpointSlice's ``endpoints``; None leaves a condition out."""
    given = (("ready", ready), ("serving", serving), ("terminating", terminating))
    conditions = {key: value for key, value in given if value is not None}
    entry: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if pod is not None:
        entry["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "default"}
    if node is not None:
        entry["nodeName"] = node
    if hostname is not None:
        entry["hostname"] = hostname
    if zone is not None:
        entry["zone"] = zone
    return entry


def endpoint_slice(
    name: str,
    *,
    service: str,
    endpoints: list[dict[str, Any]] | None,
    address_type: str = "IPv4",
    namespace: str = "default",
    triggered_at: str | None = None,
) -> dict[str, Any]:
    """A discovery.k8s.io/v1 EndpointSlice labelled for its Service, as the controller makes it
    (with its last-change-trigger-time annotation when ``triggered_at`` is given).
    """
    annotations = {"endpoints.kubernetes.io/last-change-trigger-time": triggered_at}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            **({"annotations": annotations} if triggered_at is not None else {}),
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def endpoints_object(
    name: str,
    *,
    ready: list[str],
    not_ready: list[str] | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    """A v1 Endpoints object with one subset."""
    subset: dict[str, Any] = {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    if ready:
        subset["addresses"] = [{"ip": ip} for ip in ready]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [subset] if ready or not_ready else None,
    }


def longest_named_slices(count: int, service: str = "web") -> list[dict[str, Any]]:
    """Count slices of 100 ready endpoints whose pod, node and zone names are as long as the
    API allows (253 characters): the heaviest input of its size.
    """
    name = "n" * 253
    return [
        endpoint_slice(
            f"{service}-{s}",
            service=service,
            endpoints=[
                endpoint(
                    f"10.{s // 250}.{s % 250}.{i}",
                    pod=f"{s}-{i}-{name}"[:253],
                    node=name,
                    zone=name,
                )
                for i in range(1, 101)
            ],
        )
        for s in range(count)
    ]
