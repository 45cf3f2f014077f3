"""Facet and visibility tokens: indexed beside the text so filters are doclist intersections.

Every token holds a ``:``, which the query tokenizer never produces, so no search word can
match one. Free-form values (slugs, namespaces, platforms) are hex-encoded to stay one token.
"""

from __future__ import annotations

import uuid

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
# Visibility: public documents carry no visibility token. Everything else carries RESTRICTED
# and says who may see it: ``v:<hex namespace>`` (drafts, private repositories) or HIDDEN (a
# hub repository shown through its store listing instead). Queries exclude the few restricted
# documents (``... NOT v:restricted``) rather than intersecting with a token almost every
# document carries, which would make every query walk a doclist as long as the index.
RESTRICTED = "v:restricted"
HIDDEN = "v:hidden"


def token(facet: str, value: str) -> str:
    encoded = value.encode().hex() if facet in _ENCODED else value
    return f"{_PREFIX[facet]}:{encoded}"


def visibility_token(namespace: str) -> str:
    return "v:" + namespace.encode().hex()


def product_token(product_id: uuid.UUID) -> str:
    """Visible to holders of a usable entitlement to the product (its private repositories)."""
    return "vp:" + product_id.hex


def repository_token(repository_id: uuid.UUID) -> str:
    """Visible to the collaborators of a private repository of a personal namespace."""
    return "vr:" + repository_id.hex


def prefix(facet: str) -> str:
    return _PREFIX[facet]


def decode_value(facet: str, raw: str) -> str | None:
    """The value of a token of ``facet`` from the part after the ``:``. Hex keeps the byte
    order of UTF-8, which is code-point order: raw values sort like decoded ones."""
    if facet not in _ENCODED:
        return raw
    try:
        return bytes.fromhex(raw).decode()
    except ValueError:
        return None


def decode(tok: str) -> tuple[str, str] | None:
    """(facet, value) of a facet token; None for visibility and other tokens."""
    prefix, _, raw = tok.partition(":")
    facet = _BY_PREFIX.get(prefix)
    if facet is None:
        return None
    value = decode_value(facet, raw)
    return None if value is None else (facet, value)
