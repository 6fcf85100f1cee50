"""The base's nginx.conf, run for real by Debian's nginx over a folder of sidecar output."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from typing import TYPE_CHECKING

import pytest

from kubestub import ApiStandIn, endpoint, endpoint_slice
from sidecar.page.document import PageData
from sidecar.page.member import Member
from sidecar.page.membership import Membership
from sidecar.page.render import page_assets
from sidecar.page.write import write_files
from support.nginx_runner import NginxPod
from support.pages import files as render_files
from support.ports import pod_network

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from support.sidecar_process import SidecarProcess


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[NginxPod]:
    """Nginx with the unchanged base nginx.conf on its own loopback address."""
    nginx = NginxPod(tmp_path / "pod", pod_network() + "250").start()
    yield nginx
    nginx.stop()


def write_pages(pod: NginxPod, *addresses: str) -> None:
    data = PageData(
        service="podlister",
        namespace="podlister",
        membership=Membership(ready=tuple(Member(a) for a in addresses)),
        generated_at=dt.datetime.now(dt.UTC),
        pod_ip=pod.host,
    )
    write_files(pod.html, page_assets())
    write_files(pod.html, render_files(data))


def get(
    pod: NginxPod, path: str, accept: str | None = None, *, if_none_match: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": accept} if accept else {}
    if if_none_match:
        headers["If-None-Match"] = if_none_match
    request = urllib.request.Request(pod.url + path, headers=headers)  # noqa: S310
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
        assert headers["X-Pod-IP"] == pod.host, path
        assert headers["X-Served-By"], path
        assert "nginx/" not in headers.get("Server", ""), "version must not leak"
        assert headers["X-Content-Type-Options"] == "nosniff", path
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp, path
        assert "'unsafe-inline'" not in csp, path


def test_the_pages_assets_are_served_with_their_types(pod: NginxPod) -> None:
    """page.css and page.js, which the packaged page links, come as text/css and JavaScript
    (nosniff makes the browser refuse anything else).
    """
    write_pages(pod, "10.0.0.1")
    html = get(pod, "/index.html")[2]
    for name, kind in (("page.css", "text/css"), ("page.js", "text/javascript")):
        assert f'"{name}"'.encode() in html
        status, headers, body = get(pod, f"/{name}")
        assert status == 200, name
        assert headers["Content-Type"].startswith(kind), name
        assert body == (pod.html / name).read_bytes()
    assert get(pod, "/page.map")[0] == 404


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


@pytest.mark.timeout(120)
def test_each_version_of_index_json_has_its_own_etag(
    api: ApiStandIn, start_sidecar: Callable[..., SidecarProcess], pod: NginxPod
) -> None:
    """Nginx's ETag is mtime second + size: a sidecar flipping between two lists of one
    length several times a second still gives each version its own ETag, so a page holding
    the old one gets the new list (200), and one holding the current one gets 304.
    """
    api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint("10.0.0.2")]))
    sidecar = start_sidecar(output_dir=pod.html)
    sidecar.wait_page(["10.0.0.2"])
    seen: dict[str, tuple[str, str]] = {}  # ETag -> (Last-Modified, address)
    same_second = 0
    for flip in range(40):
        address = f"10.0.0.{3 if flip % 2 == 0 else 2}"
        api.apply(endpoint_slice("web-a", service="web", endpoints=[endpoint(address)]))
        sidecar.wait_page([address])
        _, headers, body = get(pod, "/index.json")
        assert json.loads(body)["addresses"] == [address]
        etag, modified = headers["ETag"], headers["Last-Modified"]
        assert etag not in seen, f"ETag {etag} reused: {seen[etag]} then {(modified, address)}"
        same_second += any(m == modified for m, _ in seen.values())
        seen[etag] = (modified, address)
        if same_second >= 5:
            break
    assert same_second >= 5, "versions within one second are what this test is about"
    old = next(iter(seen))
    status, _, body = get(pod, "/index.json", if_none_match=old)
    assert status == 200
    assert json.loads(body)["addresses"] == [address]
    assert get(pod, "/index.json", if_none_match=etag)[0] == 304
    assert get(pod, "/index.json", if_none_match=f"{old}, {etag}")[0] == 304


def test_many_ranges_do_not_multiply_the_answer(pod: NginxPod) -> None:
    """200 one-byte ranges of index.json get the file once (at most max_ranges 1), not a
    multipart answer many times its size; one range still works.
    """
    write_pages(pod, "10.0.0.1")
    size = (pod.html / "index.json").stat().st_size
    ranges = "bytes=" + ",".join(f"{i}-{i}" for i in range(200))
    request = urllib.request.Request(pod.url + "/index.json", headers={"Range": ranges})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        body = response.read()
        assert response.status == 200
        assert "multipart" not in response.headers["Content-Type"]
    assert len(body) == size
    one = urllib.request.Request(pod.url + "/index.json", headers={"Range": "bytes=0-0"})  # noqa: S310
    with urllib.request.urlopen(one, timeout=5) as response:  # noqa: S310
        assert (response.status, response.read()) == (206, b"{")


def test_a_planted_symlink_is_not_followed(pod: NginxPod) -> None:
    """index.txt replaced by a symlink to /etc/passwd (someone with the folder's access): nginx
    refuses it rather than serve the file it points to; the pages still serve.
    """
    write_pages(pod, "10.0.0.1")
    planted = pod.html / "index.txt"
    planted.unlink()
    planted.symlink_to("/etc/passwd")
    status, _, body = get(pod, "/index.txt")
    assert status in {403, 404, 503}
    assert b"root:" not in body
    assert get(pod, "/index.json")[0] == 200
