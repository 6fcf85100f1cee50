"""A real Kubernetes control plane for the tests, built from Go modules (see go.mod)."""
