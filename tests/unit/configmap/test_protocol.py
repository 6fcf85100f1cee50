"""Frames between the sidecar and its template child: objects across, and a page's data
sent and rebuilt as it was.
"""

from __future__ import annotations

import datetime as dt
import io
import os

import pytest

from sidecar.configmap.protocol import MAX_LINE, Pipe, page_data, render_request
from sidecar.page.document import PageData, scalars
from sidecar.page.member import Member
from sidecar.page.membership import Membership


def test_objects_cross_a_pipe_whole() -> None:
    """What one end sends, the other receives, non-ASCII included; the end is EOFError."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, os.fdopen(write_end, "wb") as writer:
        sending = Pipe(io.BytesIO(), writer)
        sending.send({"html": "ünïcode", "n": 1})
        sending.send({"ok": True})
        writer.close()
        receiving = Pipe(reader, io.BytesIO())
        assert receiving.answered_within(5)
        assert receiving.receive() == {"html": "ünïcode", "n": 1}
        assert receiving.receive() == {"ok": True}
        with pytest.raises(EOFError):
            receiving.receive()


@pytest.mark.parametrize("raw", [b"x" * (MAX_LINE + 2) + b"\n", b"[1]\n", b'{"cut": '])
def test_a_line_that_is_not_one_is_refused(raw: bytes) -> None:
    """A line longer than MAX_LINE, not a JSON object, or cut short is a ValueError."""
    with pytest.raises((ValueError, EOFError)):
        Pipe(io.BytesIO(raw), io.BytesIO()).receive()


def test_a_pages_data_is_rebuilt_as_it_was_sent() -> None:
    """The child rebuilds the members (each list) and the pod's IP from a render request."""
    data = PageData(
        service="web",
        namespace="shop",
        membership=Membership(
            ready=(Member("10.0.0.1", "a", "n", "z"),), not_ready=(Member("10.0.0.2"),)
        ),
        generated_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
        pod_ip="10.0.0.1",
    )
    rebuilt = page_data(render_request(data, scalars(data)))
    assert (rebuilt.membership, rebuilt.pod_ip, rebuilt.service) == (
        data.membership,
        "10.0.0.1",
        "web",
    )
