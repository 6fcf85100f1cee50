"""podlister's sidecar: keeps a page listing the ready pods behind a Kubernetes Service."""
