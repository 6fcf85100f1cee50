"""Start and stop for the harnesses that run processes: a start that fails half-way stops
what it had started, and a with block stops everything at its end.
"""

from __future__ import annotations

from typing import Self


class Lifecycle:
    """Subclasses define _start() (start everything, return self) and stop() (idempotent)."""

    def _start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop everything started; safe to call more than once."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start; on any failure stop what was started, then raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Self:
        """Start on entering a with block."""
        return self.start()

    def __exit__(self, *_: object) -> None:
        """Stop on leaving it."""
        self.stop()
