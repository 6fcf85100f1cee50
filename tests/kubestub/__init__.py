"""The project's Kubernetes API stand-in: real HTTP, chunked watches, resourceVersions, faults.

One stand-in serves the unit-adjacent integration tests, the fault tests, the local cluster
and the benchmarks; its fault switches are methods on it, never copies of it. kmock ignores
selectors and resourceVersions, so it cannot prove what these tests prove.
"""

from kubestub.objects import endpoint, endpoint_slice, endpoints_object, longest_named_slices
from kubestub.server import ApiStandIn, Request

__all__ = [
    "ApiStandIn",
    "Request",
    "endpoint",
    "endpoint_slice",
    "endpoints_object",
    "longest_named_slices",
]
