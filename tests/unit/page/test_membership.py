"""Membership: the union of a Service's slices, each ready address once, sorted."""

from __future__ import annotations

import random
from typing import Any

from kubestub import endpoint, endpoint_slice, endpoints_object
from sidecar.page.member import Member
from sidecar.page.membership import (
    MAX_NAME,
    Membership,
    endpoints_view,
    membership,
    slice_view,
)


def members(*slices: dict[str, object]) -> Membership:
    return membership([slice_view(s) for s in slices])


def test_union_of_slices_sorted_ipv4_before_ipv6_numerically() -> None:
    """Addresses from all slices are merged; IPv4 first, numeric (not text) order."""
    v4 = endpoint_slice("a", service="web", endpoints=[endpoint("10.0.0.10"), endpoint("10.0.0.9")])
    v6 = endpoint_slice(
        "b",
        service="web",
        endpoints=[endpoint("fd00::2"), endpoint("fd00::10")],
        address_type="IPv6",
    )
    more = endpoint_slice("c", service="web", endpoints=[endpoint("9.0.0.1")])
    result = members(v6, v4, more)
    assert result.addresses == ("9.0.0.1", "10.0.0.9", "10.0.0.10", "fd00::2", "fd00::10")


def test_ready_absent_counts_as_ready() -> None:
    """An endpoint without a ready condition (or null) is ready; ready false is not."""
    s = endpoint_slice(
        "a",
        service="web",
        endpoints=[
            endpoint("10.0.0.1", ready=None),
            endpoint("10.0.0.2", ready=False),
            endpoint("10.0.0.3"),
        ],
    )
    result = members(s)
    assert result.addresses == ("10.0.0.1", "10.0.0.3")
    assert [m.address for m in result.not_ready] == ["10.0.0.2"]


def test_terminating_is_listed_apart() -> None:
    """A terminating endpoint (ready false) is not in the list but in ``terminating``."""
    s = endpoint_slice(
        "a",
        service="web",
        endpoints=[endpoint("10.0.0.1", ready=False, serving=True, terminating=True)],
    )
    result = members(s)
    assert result.addresses == ()
    assert [m.address for m in result.terminating] == ["10.0.0.1"]


def test_duplicate_across_slices_counts_once_in_its_best_state() -> None:
    """An address in two slices (as during a move) appears once, ready if either says so."""
    a = endpoint_slice(
        "a", service="web", endpoints=[endpoint("10.0.0.1", ready=False, terminating=True)]
    )
    b = endpoint_slice("b", service="web", endpoints=[endpoint("10.0.0.1", pod="p1")])
    result = members(a, b)
    assert result.ready == (Member(address="10.0.0.1", pod="p1"),)
    assert result.terminating == ()


def test_fqdn_slices_and_invalid_addresses_are_ignored() -> None:
    """FQDN slices add nothing; an address that is not an IP is skipped and reported."""
    fqdn = endpoint_slice(
        "f", service="web", endpoints=[endpoint("example.com")], address_type="FQDN"
    )
    bad = endpoint_slice(
        "b", service="web", endpoints=[endpoint("10.0.0.999"), endpoint("10.0.0.1")]
    )
    view = slice_view(bad)
    assert view.invalid_addresses == ("10.0.0.999",)
    assert members(fqdn, bad).addresses == ("10.0.0.1",)


def test_null_endpoints_and_zero_endpoints() -> None:
    """A slice with ``endpoints: null`` is valid and empty; no slices at all is an empty list."""
    assert members(endpoint_slice("a", service="web", endpoints=None)).addresses == ()
    assert membership([]) == Membership()


def test_ipv6_is_normalised() -> None:
    """IPv6 addresses are compared and shown in compressed form, so one address counts once."""
    a = endpoint_slice("a", service="web", endpoints=[endpoint("FD00:0:0::1")], address_type="IPv6")
    b = endpoint_slice("b", service="web", endpoints=[endpoint("fd00::1")], address_type="IPv6")
    assert members(a, b).addresses == ("fd00::1",)


def test_pod_name_from_target_ref() -> None:
    """The pod name comes from targetRef (kind Pod), else from hostname."""
    s = endpoint_slice(
        "a",
        service="web",
        endpoints=[
            endpoint("10.0.0.1", pod="web-1", node="n1"),
            endpoint("10.0.0.2", hostname="h2"),
        ],
    )
    assert members(s).ready == (Member("10.0.0.1", "web-1", "n1"), Member("10.0.0.2", "h2", ""))


def test_malformed_fields_do_not_raise() -> None:
    """Wrong types anywhere in an object give an empty view, not an exception."""
    broken = {
        "metadata": {"name": "x"},
        "addressType": "IPv4",
        "endpoints": [None, 3, {"addresses": "10.0.0.1"}, {"addresses": [7]}],
    }
    view = slice_view(broken)
    assert view.endpoints == ()
    assert view.invalid_addresses == ("7",)


def test_v1_endpoints_fallback() -> None:
    """v1 Endpoints: ``addresses`` are ready, ``notReadyAddresses`` are not."""
    obj = endpoints_object("web", ready=["10.0.0.2", "10.0.0.1"], not_ready=["10.0.0.3"])
    result = membership([endpoints_view(obj)])
    assert result.addresses == ("10.0.0.1", "10.0.0.2")
    assert [m.address for m in result.not_ready] == ["10.0.0.3"]
    assert membership([endpoints_view(endpoints_object("web", ready=[]))]) == Membership()


def test_only_addresses_the_api_accepts_for_the_slice_family() -> None:
    """As the API validates an endpoint's IP: an IPv6 scope id (which ``ipaddress`` takes:
    ``fe80::1%eth0``, or a script tag), the other family, unspecified, multicast and
    link-local addresses are left out and reported; the rest is listed once.
    """
    v6 = endpoint_slice(
        "v6",
        service="web",
        address_type="IPv6",
        endpoints=[
            endpoint("fe80::1%<img src=x onerror=alert(4)>"),
            endpoint("fd00::1%eth0"),
            endpoint("fe80::1"),
            endpoint("10.0.0.9"),
            endpoint("::"),
            endpoint("ff02::1"),
            endpoint("fd00::1"),
        ],
    )
    v4 = endpoint_slice(
        "v4",
        service="web",
        endpoints=[
            endpoint("fd00::2"),
            endpoint("169.254.0.1"),
            endpoint("0.0.0.0"),
            endpoint("10.0.0.1"),
        ],
    )
    assert members(v6, v4).addresses == ("10.0.0.1", "fd00::1")
    assert len(slice_view(v6).invalid_addresses) == 6
    assert slice_view(v4).invalid_addresses == ("fd00::2", "169.254.0.1", "0.0.0.0")


def test_a_condition_that_is_not_a_boolean_is_malformed_not_ready() -> None:
    """``ready`` absent or null means ready, as the API says; a string, a number or NaN is
    malformed: reported, and not taken for ready.
    """
    slice_ = endpoint_slice(
        "a",
        service="web",
        endpoints=[
            endpoint("10.0.0.1"),
            endpoint("10.0.0.2"),
            endpoint("10.0.0.3"),
            endpoint("10.0.0.4"),
        ],
    )
    slice_["endpoints"][0]["conditions"] = {"ready": None}
    slice_["endpoints"][1]["conditions"] = {"ready": "false"}
    slice_["endpoints"][2]["conditions"] = {"ready": float("nan")}
    slice_["endpoints"][3]["conditions"] = {"ready": True, "terminating": "yes"}
    view = slice_view(slice_)
    result = membership([view])
    assert result.addresses == ("10.0.0.1", "10.0.0.4")
    assert [m.address for m in result.not_ready] == ["10.0.0.2", "10.0.0.3"]
    assert len(view.malformed) == 3
    assert "conditions.ready is not a boolean: 'false'" in view.malformed


def test_names_longer_than_the_api_allows_are_cut() -> None:
    """A pod, node or zone name past 253 characters (a broken or hostile answer) is cut to
    253 and reported; the address is still listed.
    """
    slice_ = endpoint_slice(
        "a", service="web", endpoints=[endpoint("10.0.0.1", pod="p" * 1_000_000, node="n" * 300)]
    )
    view = slice_view(slice_)
    (member,) = membership([view]).ready
    assert (len(member.pod), len(member.node)) == (MAX_NAME, MAX_NAME)
    assert view.malformed == (
        f"pod name of 1000000 characters cut to {MAX_NAME}",
        f"nodeName of 300 characters cut to {MAX_NAME}",
    )


# Address texts a slice may hold: canonical, non-canonical forms of the same address,
# another family's, and ones the API refuses.
ADDRESS_TEXTS = (
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "fd00::1",
    "fd00:0:0::1",
    "FD00::2",
    "fd00::3",
    "0.0.0.0",
    "not-an-ip",
)


def random_endpoint(rng: random.Random) -> dict[str, Any]:
    """An endpoint with a random address text, names and conditions."""
    return endpoint(
        rng.choice(ADDRESS_TEXTS),
        ready=rng.choice((True, False, None)),
        terminating=rng.choice((True, False, None)),
        pod=rng.choice(("a", "b", None)),
        node=rng.choice(("n1", "n2", None)),
        zone=rng.choice(("z1", None)),
    )


def successor(rng: random.Random, obj: dict[str, Any]) -> dict[str, Any]:
    """The slice's next version: some endpoints replaced, some added or gone; now and then
    another address type.
    """
    endpoints = [
        random_endpoint(rng) if rng.random() < 0.3 else dict(e)
        for e in obj["endpoints"]
        if rng.random() < 0.9
    ] + [random_endpoint(rng) for _ in range(rng.randint(0, 2))]
    address_type = obj["addressType"] if rng.random() < 0.8 else rng.choice(("IPv4", "IPv6"))
    return endpoint_slice("s", service="web", endpoints=endpoints, address_type=address_type)


def test_an_unchanged_endpoint_parses_to_an_equal_member() -> None:
    """Over 2,000 random successions of one slice (addresses in and out of normal form,
    other families, invalid ones, names and conditions changing), an endpoint that kept its
    address, names and conditions parses to an equal Member with an equal hash: the key under
    which the pages keep its pieces (page/fragments.py) finds them again.
    """
    rng = random.Random(20261130)
    kept = 0
    for _ in range(2000):
        first = endpoint_slice(
            "s",
            service="web",
            endpoints=[random_endpoint(rng) for _ in range(rng.randint(0, 6))],
            address_type=rng.choice(("IPv4", "IPv6")),
        )
        earlier = {e.member: e for e in slice_view(first).endpoints}
        for endpoint_ in slice_view(successor(rng, first)).endpoints:
            same = earlier.get(endpoint_.member)
            if same is not None:
                kept += 1
                assert hash(same.member) == hash(endpoint_.member)
                assert same.sort_key == endpoint_.sort_key
    assert kept > 500  # unchanged endpoints were common (not only fresh ones)


def ready_addresses(*slices: dict[str, object]) -> tuple[str, ...]:
    return members(*slices).addresses


def test_leading_zeros_are_decimal_as_kube_proxy_reads_them() -> None:
    """IPv4 text with leading zeros (accepted by the API from 1.23 until its stricter
    validation) is read as kube-proxy's ParseIPSloppy reads it, decimal; what is no address
    at all is still refused and reported.
    """
    view = slice_view(
        endpoint_slice(
            "a",
            service="web",
            endpoints=[
                endpoint("01.02.03.04"),
                endpoint("010.000.000.011"),
                endpoint("256.0.0.1"),
                endpoint("1.2.3"),
                endpoint("0x0a.0.0.1"),
            ],
        )
    )
    assert [e.member.address for e in view.endpoints] == ["1.2.3.4", "10.0.0.11"]
    assert view.invalid_addresses == ("256.0.0.1", "1.2.3", "0x0a.0.0.1")


def test_ipv4_mapped_addresses_are_their_ipv4_form() -> None:
    """An IPv4-mapped IPv6 address is its IPv4 form, as kube-proxy writes it back: in an IPv6
    slice beside the same pod's IPv4 slice it is one row, not two; in an IPv4 slice it is
    listed; the link-local check applies to the IPv4 form.
    """
    v4 = endpoint_slice("a", service="web", endpoints=[endpoint("10.0.0.1", pod="web-1")])
    v6 = endpoint_slice(
        "b",
        service="web",
        address_type="IPv6",
        endpoints=[endpoint("::ffff:10.0.0.1", pod="web-1"), endpoint("::ffff:169.254.1.1")],
    )
    assert ready_addresses(v4, v6) == ("10.0.0.1",)
    assert slice_view(v6).invalid_addresses == ("::ffff:169.254.1.1",)
    mapped_in_v4 = endpoint_slice("c", service="web", endpoints=[endpoint("::ffff:10.0.0.7")])
    assert ready_addresses(mapped_in_v4) == ("10.0.0.7",)
    assert ready_addresses(
        endpoint_slice("d", service="web", endpoints=[endpoint("::ffff:010.0.0.8")])
    ) == ("10.0.0.8",)


def test_an_ip_reused_by_a_new_pod_is_the_running_pods() -> None:
    """A new pod got the IP of one that still terminates (slice A: web-old terminating, slice
    B: web-new not yet ready): as kube-proxy does, the pod that is not terminating holds it,
    whatever the order of the slices.
    """
    old = endpoint_slice(
        "a",
        service="web",
        endpoints=[endpoint("10.0.0.5", ready=False, terminating=True, pod="web-old")],
    )
    new = endpoint_slice(
        "b", service="web", endpoints=[endpoint("10.0.0.5", ready=False, pod="web-new")]
    )
    for order in ((old, new), (new, old)):
        result = members(*order)
        assert [m.pod for m in result.not_ready] == ["web-new"]
        assert result.terminating == ()


def test_only_an_endpoints_first_address_counts() -> None:
    """An endpoint's addresses are fungible (the API's word) and kube-proxy uses the first:
    so does the page.
    """
    entry = endpoint("10.0.0.1")
    entry["addresses"] = ["10.0.0.1", "10.0.0.2"]
    assert ready_addresses(endpoint_slice("a", service="web", endpoints=[entry])) == ("10.0.0.1",)


def test_terminating_pods_that_still_serve_say_so() -> None:
    """A terminating endpoint's serving condition is kept (kube-proxy sends such pods traffic
    while no pod is ready); absent counts as serving, as kube-proxy reads it; a ready pod
    serves, a not-ready one does not.
    """
    result = members(
        endpoint_slice(
            "a",
            service="web",
            endpoints=[
                endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
                endpoint("10.0.0.2", ready=False, serving=False, terminating=True),
                endpoint("10.0.0.3", ready=False, terminating=True),
                endpoint("10.0.0.4"),
                endpoint("10.0.0.5", ready=False),
            ],
        )
    )
    assert [(m.address, m.serving) for m in result.terminating] == [
        ("10.0.0.1", True),
        ("10.0.0.2", False),
        ("10.0.0.3", True),
    ]
    assert [m.serving for m in result.ready] == [True]
    assert [m.serving for m in result.not_ready] == [False]


def test_a_lone_surrogate_in_a_name_becomes_a_replacement_character() -> None:
    """A JSON escape of a lone surrogate in a pod, node or zone name (a broken proxy can send
    one) becomes U+FFFD: the name can be written, encoded and escaped like any other.
    """
    view = slice_view(
        endpoint_slice(
            "a",
            service="web",
            endpoints=[endpoint("10.0.0.1", pod="bad\ud800name", node="n\udfff", zone="z")],
        )
    )
    member = view.endpoints[0].member
    assert (member.pod, member.node) == ("bad\ufffdname", "n\ufffd")
    member.pod.encode()


def test_a_slices_trigger_time_is_read_as_the_controller_writes_it() -> None:
    """The last-change-trigger-time annotation, RFC 3339 with nanoseconds as the controller
    writes it (or whole seconds), is Unix time; anything else is None, never an error.
    """

    def at(value: str | None) -> float | None:
        obj = endpoint_slice("web-a", service="web", endpoints=[], triggered_at=value)
        return slice_view(obj).changed_at

    assert at("2026-12-07T05:00:00Z") == 1796619600.0
    assert at("2026-12-07T05:00:00.250000000Z") == 1796619600.25
    assert at("2026-12-07T06:00:00+01:00") == 1796619600.0
    for hostile in (None, "", "yesterday", "2026-12-07", "2026-12-07T05:00:00", "9" * 4000):
        assert at(hostile) is None, hostile
    obj = endpoint_slice("web-a", service="web", endpoints=[])
    obj["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": 7}
    assert slice_view(obj).changed_at is None
    legacy = endpoints_object("web", ready=["10.0.0.1"])  # the Endpoints controller stamps too
    legacy["metadata"]["annotations"] = {
        "endpoints.kubernetes.io/last-change-trigger-time": "2026-12-07T05:00:00Z"
    }
    assert endpoints_view(legacy).changed_at == 1796619600.0
