"""Publisher-written markdown rendered to safe HTML (no raw HTML, no script URLs)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_TAGS = {
    "a",
    "blockquote",
    "br",
    "code",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "li",
    "ol",
    "p",
    "pre",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
    "img",
    "del",
}
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "code": {"class"}}


@lru_cache(maxsize=1)
def _parser() -> Any:
    # Imported on first use (markdown-it and nh3, ≈ 3 MiB): workers serving the registry's
    # token requests only never render markdown.
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


@lru_cache(maxsize=512)
def render(text: str) -> str:
    import nh3

    html = _parser().render(text or "")
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
    )
