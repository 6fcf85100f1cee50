"""Reads the packaged page's HTML as a browser would: which addresses each list shows."""

from __future__ import annotations

from html.parser import HTMLParser


class _Lists(HTMLParser):
    """Collects the <code> text of each <li> inside <ol id=...> (ready, terminating, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: dict[str, list[str]] = {}
        self._list: str | None = None
        self._in_code = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "ol":
            self._list = dict(attrs).get("id")
            if self._list is not None:
                self.lists[self._list] = []
        elif tag == "code" and self._list is not None:
            self._in_code = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "ol":
            self._list = None
        elif tag == "code":
            self._in_code = False

    def handle_data(self, data: str) -> None:
        if self._in_code and self._list is not None:
            self.lists[self._list].append(data)


def listed(html: str, list_id: str = "ready") -> list[str] | None:
    """The addresses the page lists under the given list (ready by default), in order;
    None when the page has no such list (a template of the user's own).
    """
    parser = _Lists()
    parser.feed(html)
    return parser.lists.get(list_id)


def shows_exactly(html: str, expected: list[str]) -> bool:
    """The packaged page lists exactly these as ready; another template names each of them."""
    ready = listed(html)
    return ready == expected if ready is not None else all(a in html for a in expected)
