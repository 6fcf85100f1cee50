"""A real node for the tests: kubelet, containerd, kube-proxy, in namespaces of its own."""
