"""The Kubernetes side: the connection, list and watch, the stream, the loop, its error policy.

Imports nothing at import time: ``client_import`` must run before the client is imported.
"""
