"""Keeps every version of index.json distinguishable by nginx's ETag.

nginx's ETag for a static file is its modification time in whole seconds and its size
(``"<mtime hex>-<size hex>"``). The live page polls index.json with If-None-Match, so two
versions written within one second with the same length (``10.0.0.2`` replaced by
``10.0.0.3``) would share an ETag, and the browser would be told "304 Not Modified" about a
list that changed. Each version therefore gets a size not yet used in its second: JSON
allows trailing whitespace, so a few spaces before the final newline tell them apart
without changing what the document says.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class DistinctVersions:
    """The sizes already given out in the current second (the ETag's other half)."""

    second: int = -1
    sizes: set[int] = dataclasses.field(default_factory=set)

    def seen(self, second: int, size: int) -> None:
        """Record a version that exists already (the file an earlier run left)."""
        self._in(second).add(size)

    def _in(self, second: int) -> set[int]:
        """The sizes given out in that second (a new second starts with none)."""
        if second != self.second:
            self.second, self.sizes = second, set()
        return self.sizes

    def distinct(self, data: bytes, second: int) -> bytes:
        """Data padded, if needed, to a size no other version of this second has.

        ``data`` ends with a newline (render_files writes it so); spaces go before it.
        Seconds only move forward here: after a clock step back the set starts afresh,
        which can reuse an ETag of that earlier second only if the sizes match too.
        """
        sizes = self._in(second)
        padding = 0
        while len(data) + padding in sizes:
            padding += 1
        sizes.add(len(data) + padding)
        if not padding:
            return data
        return data[:-1] + b" " * padding + data[-1:]
