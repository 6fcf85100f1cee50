"""Benchmarks: scripts that print figures (medians and p99 over repeated runs), never tests."""
