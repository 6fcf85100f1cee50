"""podlister's sidecar: keeps a page listing the ready pods behind a Kubernetes Service."""

__version__ = "0.1.0"
