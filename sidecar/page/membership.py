"""Pure logic: EndpointSlices (or v1 Endpoints) in, the membership of a Service out.

Every field of an API object is treated as untrusted: addresses are validated with
``ipaddress`` and names are only ever passed on as text (the renderer escapes them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from operator import itemgetter
from typing import Any

from sidecar.metrics import Source
from sidecar.page.member import Member

# Sort key of an address: IPv4 (family 4) before IPv6, numeric order within a family.
SortKey = tuple[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of one endpoint of a slice, parsed once when the slice arrives."""

    member: Member
    sort_key: SortKey
    ready: bool
    terminating: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SliceView:
    """The part of one EndpointSlice (or one v1 Endpoints object) that membership needs."""

    name: str
    endpoints: tuple[Endpoint, ...]
    invalid_addresses: tuple[str, ...] = ()
    malformed: tuple[str, ...] = ()
    """What else was wrong (conditions that are not booleans, names cut): logged, not fatal."""
    text: int = 0
    """Characters of its members' addresses and names: what a page of them weighs."""
    changed_at: float | None = None
    """When the change it records was triggered (Unix time), as the controller that wrote it
    stamps it; None when it is not stamped (kube-proxy measures its own latency from it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    """Who is behind the Service: each list sorted, each address in exactly one list."""

    ready: tuple[Member, ...] = ()
    terminating: tuple[Member, ...] = ()
    not_ready: tuple[Member, ...] = ()
    text: int = dataclasses.field(default=0, compare=False)
    """Characters of the members' addresses and names (their slices', so at least this)."""
    addresses: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    """The ready addresses, the list the page is about (computed once: it is read often)."""

    def __post_init__(self) -> None:
        """Derive the addresses from the ready members."""
        object.__setattr__(self, "addresses", tuple(member.address for member in self.ready))


# Longest name the API allows (DNS-1123 subdomain: pod and node names); zones are label values.
MAX_NAME = 253


# IPv4 as kube-proxy's ParseIPSloppy reads it: four decimal octets, leading zeros allowed (the
# API took "010.0.0.1" until 1.23's stricter validation; such objects still exist).
_SLOPPY_V4 = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)")


def _sloppy_v4(text: str) -> ipaddress.IPv4Address | None:
    found = _SLOPPY_V4.fullmatch(text)
    octets = [int(octet) for octet in found.groups()] if found else [256]
    return ipaddress.IPv4Address(bytes(octets)) if max(octets) <= 255 else None  # noqa: PLR2004


def read_address(text: str, family: int | None = None) -> tuple[str, SortKey] | None:
    """An address read as kube-proxy and CoreDNS read it, and its sort key (None: refused).

    Go's ParseIPSloppy, then String(): leading zeros are decimal ("010.0.0.1" is 10.0.0.1), an
    IPv4-mapped IPv6 address is its IPv4 form (in either family's slice: one pod, one row).
    As the API validates: the slice's family, no scope id (``%eth0``), not unspecified,
    multicast or link-local. Loopback, which the API refuses too, is let through: the local
    cluster of the tests runs its pods there.
    """
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if len(text) > 64 or not text.isascii():  # noqa: PLR2004 - longer than any address
        return None
    if "." in text and ":" not in text.split(".", 1)[0]:  # Go looks at the first of . and :
        ip = _sloppy_v4(text)
    else:
        head, _, tail = text.rpartition(":")
        embedded = _sloppy_v4(tail) if "." in tail else None
        try:
            ip = ipaddress.IPv6Address(f"{head}:{embedded}" if embedded else text)
        except ValueError:
            return None
        if ip.scope_id is not None:
            return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if ip is None or (family is not None and ip.version != family and mapped is None):
        return None
    ip = mapped or ip
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return None
    return str(ip), (ip.version, int(ip))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: object) -> str:
    """Text as it can be written: a lone surrogate (a JSON escape) becomes U+FFFD."""
    if not isinstance(value, str):
        return ""
    return value if value.isascii() else _SURROGATE.sub("\ufffd", value)


def _name(value: object, field: str, malformed: list[str]) -> str:
    """A name as text, cut at MAX_NAME (the API allows no longer) with a note of it."""
    text = _text(value)
    if len(text) > MAX_NAME:
        malformed.append(f"{field} of {len(text)} characters cut to {MAX_NAME}")
        return text[:MAX_NAME]
    return text


def _condition(conditions: Mapping[str, Any], name: str, malformed: list[str]) -> bool | None:
    """A condition as the API defines it: true, false, or absent/null (None)."""
    value = conditions.get(name)
    if value is None or isinstance(value, bool):
        return value
    malformed.append(f"conditions.{name} is not a boolean: {str(value)[:32]!r}")
    return False


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> list[Any]:
    # ``endpoints`` and ``addresses`` may be null or absent in real objects.
    return value if isinstance(value, list) else []


def _pod_name(target_ref: object, malformed: list[str]) -> str:
    ref = _mapping(target_ref)
    return _name(ref.get("name"), "pod name", malformed) if ref.get("kind") == "Pod" else ""


_FAMILIES = {"IPv4": 4, "IPv6": 6}
# Set by the EndpointSlice and Endpoints controllers on each change a pod or the Service
# triggered (RFC 3339, UTC): the Ready condition's lastTransitionTime, in whole seconds.
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"


def changed_at(metadata: Mapping[str, Any]) -> float | None:
    """The object's trigger time as Unix time; None when absent or not a zoned RFC 3339 time."""
    value = _mapping(metadata.get("annotations")).get(TRIGGER_TIME)
    if not isinstance(value, str) or len(value) > 40:  # noqa: PLR2004 - RFC 3339 with nanoseconds is 30
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def slice_view(obj: Mapping[str, Any]) -> SliceView:
    """Parse a discovery.k8s.io/v1 EndpointSlice; FQDN slices hold no addresses we list."""
    metadata = _mapping(obj.get("metadata"))
    name = _text(metadata.get("name"))
    family = _FAMILIES.get(_text(obj.get("addressType")))
    if family is None:
        return SliceView(name=name, endpoints=())
    view = _view(name, family, _sequence(obj.get("endpoints")))
    return dataclasses.replace(view, changed_at=changed_at(metadata))


def endpoints_view(obj: Mapping[str, Any]) -> SliceView:
    """Parse a v1 Endpoints object (where the EndpointSlice API is absent) as its endpoints."""
    endpoints = [
        {**address, "addresses": [address.get("ip")], "conditions": {"ready": ready}}
        for subset in map(_mapping, _sequence(obj.get("subsets")))
        for field, ready in (("addresses", True), ("notReadyAddresses", False))
        for address in map(_mapping, _sequence(subset.get(field)))
    ]
    metadata = _mapping(obj.get("metadata"))
    view = _view(_text(metadata.get("name")), None, endpoints)
    return dataclasses.replace(view, changed_at=changed_at(metadata))


def _view(name: str, family: int | None, raw_endpoints: list[Any]) -> SliceView:
    """The endpoints of one object, each address read for family (None: either)."""
    endpoints: list[Endpoint] = []
    invalid: list[str] = []
    malformed: list[str] = []
    for endpoint in map(_mapping, raw_endpoints):
        conditions = _mapping(endpoint.get("conditions"))
        # As kube-proxy reads them: an absent or null ready or serving means true; anything
        # but a boolean is malformed, and taken as false.
        ready = _condition(conditions, "ready", malformed) is not False
        serving = _condition(conditions, "serving", malformed) is not False
        terminating = _condition(conditions, "terminating", malformed) is True
        pod = _pod_name(endpoint.get("targetRef"), malformed) or _name(
            endpoint.get("hostname"), "hostname", malformed
        )
        node = _name(endpoint.get("nodeName"), "nodeName", malformed)
        # Set by the EndpointSlice controller from the node's topology.kubernetes.io/zone.
        zone = _name(endpoint.get("zone"), "zone", malformed)
        # The addresses are fungible (the API's word): kube-proxy uses the first, so do we.
        addresses = _sequence(endpoint.get("addresses"))
        if not addresses:
            continue  # kube-proxy ignores it too
        address = addresses[0]
        parsed = read_address(address, family) if isinstance(address, str) else None
        if parsed is None:
            invalid.append(str(address)[:64])
            continue
        text, key = parsed
        # Traffic goes to a ready pod, and to a terminating one that serves (while none is ready).
        member = Member(text, pod, node, zone, serving=serving if terminating else ready)
        endpoints.append(Endpoint(member, key, ready=ready, terminating=terminating))
    return SliceView(
        name=name,
        endpoints=tuple(endpoints),
        invalid_addresses=tuple(invalid),
        malformed=tuple(malformed),
        text=sum(len(e.member.pod) + len(e.member.node) + len(e.member.zone) for e in endpoints)
        + 40 * len(endpoints),  # an address is at most 39 characters
    )


# Lower rank wins when one address shows up twice: while an endpoint moves between slices,
# and when a new pod reuses the IP of one that terminates, where kube-proxy prefers the pod
# that is not terminating.
_READY, _NOT_READY, _TERMINATING = 0, 1, 2
# Sorts (sort key, member) pairs by the key alone (keys are unique: one per address); an
# itemgetter is called from C, a lambda is a Python call per member.
_BY_KEY = itemgetter(0)


def membership(views: Collection[SliceView]) -> Membership:
    """Union all slices of a Service: each address once, in its best state, sorted."""
    best: dict[str, tuple[int, SortKey, Member]] = {}
    for view in views:
        for endpoint in view.endpoints:
            if endpoint.terminating:
                rank = _TERMINATING
            else:
                rank = _READY if endpoint.ready else _NOT_READY
            address = endpoint.member.address
            seen = best.get(address)
            if seen is None or rank < seen[0]:
                best[address] = (rank, endpoint.sort_key, endpoint.member)
    groups: tuple[list[tuple[SortKey, Member]], ...] = ([], [], [])
    for rank, key, member in best.values():
        groups[rank].append((key, member))
    ready, not_ready, terminating = (
        tuple(member for _, member in sorted(group, key=_BY_KEY)) for group in groups
    )
    text = sum(view.text for view in views)
    return Membership(ready=ready, terminating=terminating, not_ready=not_ready, text=text)


def parse_as(api: Source) -> Callable[[Mapping[str, Any]], SliceView]:
    """How an object of api becomes a SliceView: an EndpointSlice, or a v1 Endpoints."""
    return slice_view if api is Source.ENDPOINT_SLICES else endpoints_view


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole known state after a change, handed from the watch to the publisher."""

    views: tuple[SliceView, ...]
    source: Source
    received_at: float  # time.monotonic() when the change arrived
