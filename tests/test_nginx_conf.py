"""The base's nginx.conf, run for real by Debian's nginx over a folder of sidecar output."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from typing import TYPE_CHECKING

import pytest

from nginx_runner import NginxPod
from sidecar.membership import Member, Membership
from sidecar.render import PageData, packaged_template, render_files
from sidecar.write import write_files

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ADDRESS = "127.0.1.250"


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[NginxPod]:
    """Nginx with the unchanged base nginx.conf on its own loopback address."""
    nginx = NginxPod(tmp_path / "pod", ADDRESS).start()
    yield nginx
    nginx.stop()


def write_pages(pod: NginxPod, *addresses: str) -> None:
    data = PageData(
        service="podlister",
        namespace="podlister",
        membership=Membership(ready=tuple(Member(a) for a in addresses)),
        generated_at=dt.datetime.now(dt.UTC),
        pod_ip=ADDRESS,
    )
    write_files(pod.html, render_files(data, packaged_template()))


def get(pod: NginxPod, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(pod.url + path, headers={"Accept": accept} if accept else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_not_ready_before_the_first_page(pod: NginxPod) -> None:
    """/readyz is 503 and / is 503 until the sidecar has written a page; then both are 200."""
    assert get(pod, "/readyz")[0] == 503
    assert get(pod, "/")[0] == 503
    assert get(pod, "/healthz")[0] == 200
    write_pages(pod, "10.0.0.1")
    assert get(pod, "/readyz")[0] == 200
    assert get(pod, "/")[0] == 200


def test_content_negotiation(pod: NginxPod) -> None:
    """Curl gets the plain list, a browser HTML, a JSON client JSON; /index.json always JSON."""
    write_pages(pod, "10.0.0.1", "10.0.0.2")
    status, headers, body = get(pod, "/")
    assert (status, body) == (200, b"10.0.0.1\n10.0.0.2\n")
    assert headers["Content-Type"].startswith("text/plain")
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    status, headers, body = get(pod, "/", browser)
    assert headers["Content-Type"].startswith("text/html")
    assert b"<!doctype html>" in body
    status, headers, body = get(pod, "/", "application/json")
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["addresses"] == ["10.0.0.1", "10.0.0.2"]
    status, headers, body = get(pod, "/index.json")
    assert json.loads(body)["service"] == "podlister"


def test_headers(pod: NginxPod) -> None:
    """Every answer says no-store, varies on Accept and names the pod and address that served."""
    write_pages(pod, "10.0.0.1")
    for path in ("/", "/index.html", "/readyz", "/nope"):
        _, headers, _ = get(pod, path)
        assert headers["Cache-Control"] == "no-store", path
        assert headers["Vary"] == "Accept", path
        assert headers["X-Pod-IP"] == ADDRESS, path
        assert headers["X-Served-By"], path
        assert "nginx/" not in headers.get("Server", ""), "version must not leak"


def test_temp_files_and_unknown_paths_are_not_served(pod: NginxPod) -> None:
    """The sidecar's temp files and any other path answer 404."""
    write_pages(pod, "10.0.0.1")
    (pod.html / ".podlister-index.html.0123abcd.tmp").write_text("half")
    assert get(pod, "/.podlister-index.html.0123abcd.tmp")[0] == 404
    assert get(pod, "/etc/passwd")[0] == 404


def test_pages_replaced_while_serving(pod: NginxPod) -> None:
    """A rename by the sidecar is visible on the next request (no open-file cache)."""
    write_pages(pod, "10.0.0.1")
    assert get(pod, "/")[2] == b"10.0.0.1\n"
    write_pages(pod, "10.0.0.9")
    assert get(pod, "/")[2] == b"10.0.0.9\n"
