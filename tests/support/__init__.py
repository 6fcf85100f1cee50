"""Helpers the tests share that are neither servers nor harnesses: doubles and scripts."""
