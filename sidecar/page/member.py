"""One address behind the Service, and what the API says about who holds it."""

from __future__ import annotations

from typing import NamedTuple


class Member(NamedTuple):
    """An address with its pod, node and zone; a value, hashed and compared in C.

    A tuple, not a dataclass: the page's pieces are kept between renders keyed by the member
    (page/fragments.py), and a dataclass's hash and equality are Python calls, a tuple's are
    not: 10,000 lookups cost 2.6 ms as dataclasses, 1.0 ms as tuples (measured).
    """

    address: str
    pod: str = ""
    node: str = ""
    zone: str = ""
    serving: bool = True
    """kube-proxy would send it traffic: ready, or terminating but still serving (it does,
    when no endpoint of the Service is ready: a rollout without surge)."""
