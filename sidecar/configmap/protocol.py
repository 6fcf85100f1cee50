"""What the sidecar and its template child say to each other: a JSON object per line.

The parent asks ``compile`` (a template's source) or ``render`` (the page's data); the child
answers ``ok``, ``html``, or ``error`` (file, line, reason). JSON text holds no raw newline.
"""

from __future__ import annotations

import datetime as dt
import json
import select
from typing import IO, TYPE_CHECKING, Any

from sidecar.page.document import PageData
from sidecar.page.member import Member
from sidecar.page.membership import Membership

if TYPE_CHECKING:
    from collections.abc import Iterable

MAX_LINE = 64 * 1024 * 1024  # a request of a 10,000-member page is a few MB


class Pipe:
    """One end of the conversation: lines read from one stream, written to the other."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        """Talk over these two streams."""
        self._reader, self._writer = reader, writer

    def send(self, obj: dict[str, Any]) -> None:
        """Send one object (ASCII: a lone surrogate from the API cannot break the line)."""
        self._writer.write(json.dumps(obj).encode() + b"\n")
        self._writer.flush()

    def answered_within(self, timeout: float) -> bool:
        """True once there is something to read (or the other end is gone) within timeout."""
        return bool(select.select([self._reader], [], [], timeout)[0])

    def receive(self) -> dict[str, Any]:
        """One object; EOFError at the end, ValueError for a line that is not one."""
        line = self._reader.readline(MAX_LINE + 1)
        if not line:
            raise EOFError
        obj = json.loads(line) if line.endswith(b"\n") else None
        if not isinstance(obj, dict):
            msg = "not a JSON object on one line (or a line too long)"
            raise ValueError(msg)  # noqa: TRY004 - bad input, caught with the other ValueErrors
        return obj

    def close(self) -> None:
        """Close both streams: the other end reads EOF."""
        for stream in (self._writer, self._reader):
            try:
                stream.close()
            except OSError:
                continue


def _rows(members: Iterable[Member]) -> list[list[str | bool]]:
    return [list(member) for member in members]


def render_request(data: PageData, fields: dict[str, Any]) -> dict[str, Any]:
    """What the child needs to build the template's variables: JSON-ready."""
    return {
        "op": "render",
        "fields": fields,
        "pod_ip": data.pod_ip,
        "members": _rows(data.membership.ready),
        "terminating": _rows(data.membership.terminating),
        "not_ready": _rows(data.membership.not_ready),
    }


def page_data(request: dict[str, Any]) -> PageData:
    """The page's data, as render_request sent it (the fields are index.json's scalars)."""
    fields = request["fields"]
    return PageData(
        service=fields["service"],
        namespace=fields["namespace"],
        membership=Membership(
            ready=tuple(Member(*row) for row in request["members"]),
            terminating=tuple(Member(*row) for row in request["terminating"]),
            not_ready=tuple(Member(*row) for row in request["not_ready"]),
        ),
        generated_at=dt.datetime.now(dt.UTC),
        pod_ip=request["pod_ip"],
    )
