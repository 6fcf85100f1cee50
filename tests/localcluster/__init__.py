"""A local cluster on one machine: the API stand-in as EndpointSlice controller, real nginx pods
with real sidecars on 127.A.B.N (a block of loopback addresses per run), and an nginx load
balancer that, like a Service, sends traffic to ready pods only.
"""

from localcluster.cluster import LocalCluster, Pod

__all__ = ["LocalCluster", "Pod"]
