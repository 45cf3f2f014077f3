"""Facet and visibility tokens: indexed beside the text so filters are doclist intersections.

Every token holds a ``:``, which the query tokenizer never produces, so no search word can
match one. Free-form values (slugs, namespaces, platforms) are hex-encoded to stay one token.
"""

from __future__ import annotations

FACETS = ("source", "kind", "category", "pricing", "badge", "publisher", "platform")
_PREFIX = {
    "source": "s",
    "kind": "k",
    "category": "c",
    "pricing": "pr",
    "badge": "b",
    "publisher": "p",
    "platform": "pl",
}
_ENCODED = {"category", "publisher", "platform"}
_BY_PREFIX = {v: k for k, v in _PREFIX.items()}

ALL = "x:all"  # on every document: the match-everything token for queries without words
PUBLIC = "v:public"
HIDDEN = "v:hidden"  # a hub repository shown through its store listing instead


def token(facet: str, value: str) -> str:
    encoded = value.encode().hex() if facet in _ENCODED else value
    return f"{_PREFIX[facet]}:{encoded}"


def visibility_token(namespace: str) -> str:
    return "v:" + namespace.encode().hex()


def decode(tok: str) -> tuple[str, str] | None:
    """(facet, value) of a facet token; None for visibility and other tokens."""
    prefix, _, value = tok.partition(":")
    facet = _BY_PREFIX.get(prefix)
    if facet is None:
        return None
    if facet in _ENCODED:
        try:
            return facet, bytes.fromhex(value).decode()
        except ValueError:
            return None
    return facet, value
