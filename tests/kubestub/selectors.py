"""Label and field selectors, the subset the sidecar and kubectl use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _requirement(term: str) -> Predicate:
    term = term.strip()
    if "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        return lambda obj: _labels(obj).get(key) != value
    if "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
        return lambda obj: _labels(obj).get(key) == value
    if term.startswith("!"):
        return lambda obj: term[1:] not in _labels(obj)
    return lambda obj: term in _labels(obj)


def label_selector(text: str) -> Predicate:
    """Equality, inequality and existence terms, joined by commas (all must hold)."""
    terms = [_requirement(term) for term in text.split(",") if term.strip()]
    return lambda obj: all(term(obj) for term in terms)


def field_selector(text: str) -> Predicate:
    """``metadata.name`` and ``metadata.namespace`` equality, as the API serves for all kinds."""
    wanted: list[tuple[str, str, bool]] = []
    for term in (t.strip() for t in text.split(",") if t.strip()):
        negate = "!=" in term
        field, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        if field not in {"metadata.name", "metadata.namespace"}:
            msg = f"field label not supported: {field}"
            raise ValueError(msg)
        wanted.append((field.split(".")[1], value, negate))

    def matches(obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        return all((metadata.get(key) == value) != negate for key, value, negate in wanted)

    return matches
