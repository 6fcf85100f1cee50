"""A page template of the user's own (a ConfigMap in a pod): sandboxed, in a bounded child.

Nothing here is imported unless PODLISTER_TEMPLATE_DIR is set.
"""
