"""What the probes report, and the server that answers them."""
