"""A real cluster for the tests: nodes (kubelet, containerd, kube-proxy) in namespaces."""
