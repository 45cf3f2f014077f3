"""The HTML search page: results with a facet sidebar, highlighting and pagination."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Request
from markupsafe import Markup, escape
from starlette.responses import JSONResponse, Response

from store.billing import ownership
from store.deps import DbSession
from store.errors import StoreError
from store.registry import hub
from store.search import service
from store.search.api import badges_of, doc_url, int_param
from store.search.query import HEAD_PREFIX, Query, fold, stem
from store.web.routing import Viewer, page_router
from store.web.templating import render

router = page_router()

_WORD = re.compile(r"[^\W_]+")
_PARAMS = ("q", "sort", *service.facets.FACETS)


@dataclass
class Pager:
    page: int
    pages: int

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def highlighter(query: Query) -> object:
    """``highlight(text, name=False)``: the words of ``text`` the query matched. A
    2-character prefix matches names and titles only (store.search.query.head_prefix), so
    it marks words there and nowhere else."""
    terms = query.terms()
    everywhere = tuple(p for p in query.prefixes() if len(p) != HEAD_PREFIX)
    in_names = tuple(query.prefixes())

    def highlight(text: str | None, name: bool = False) -> Markup:
        prefixes = in_names if name else everywhere
        text = text or ""
        out, last = [], 0
        for m in _WORD.finditer(text):
            word = fold(m.group())
            forms = (word, stem(word))
            if any(f in terms or (prefixes and f.startswith(prefixes)) for f in forms):
                out.append(escape(text[last : m.start()]))
                out.append(Markup("<mark>") + escape(m.group()) + Markup("</mark>"))
                last = m.end()
        out.append(escape(text[last:]))
        return Markup("").join(out)

    return highlight


@router.get("/search/suggestions")
def search_suggestions(request: Request, session: DbSession, viewer: Viewer) -> Response:
    """The header box's search as you type: the first matches' names, from the same search
    as the results page and as the signed-in viewer (the JSON API does not read the
    session, so a member would not be offered their organization's private repositories)."""
    q = request.query_params.get("q", "").strip()
    names: list[dict[str, str]] = []
    if len(q) >= 2:
        try:
            results = service.search(session, q=q, account=viewer, page=1, per_page=6)
        except StoreError:
            results = None  # a query the search refuses offers nothing; the page says why
        if results is not None:
            names = [{"name": h.doc.name, "title": h.doc.title or h.doc.name} for h in results.hits]
    return JSONResponse({"q": q, "results": names}, headers={"Cache-Control": "private, no-store"})


@router.get("/search")
def search_page(request: Request, session: DbSession, viewer: Viewer) -> Response:
    """Search the store and the hub."""
    params = {k: request.query_params.get(k, "") for k in _PARAMS}

    def url(**changes: str | int | None) -> str:
        merged: dict[str, str | int | None] = {**params, **changes}
        clean = {k: v for k, v in merged.items() if v not in (None, "")}
        return "/search" + (f"?{urlencode(clean)}" if clean else "")

    error = None
    results = None
    sort, notice = service.resolve_sort(params["sort"])
    if notice:
        params["sort"] = ""
    try:
        filters = service.make_filters(**{f: params[f] for f in service.facets.FACETS})
        results = service.search(
            session,
            q=params["q"],
            filters=filters,
            account=viewer,
            page=int_param(request.query_params.get("page"), "page", 1),
            per_page=int_param(request.query_params.get("per_page"), "per_page", 20),
            sort=sort,
        )
    except StoreError as exc:
        error = exc.detail
    context = {
        "q": params["q"],
        "sort": sort,
        "sorts": service.SORTS,
        "notice": notice,
        "sort_url": url(sort=None, page=None),
        "results": results,
        "error": error,
        "pager": Pager(results.page, results.pages) if results else None,
        "page_url": lambda n: url(page=n),
        "facet_url": lambda facet, value: url(**{facet: value, "page": None}),
        "suggestions": service.suggestions(results) if results and not results.hits else [],
        "did_you_mean": service.did_you_mean(session, results, viewer) if results else None,
        "suggest_url": lambda q: "/search?" + urlencode({"q": q}),
        "highlight": highlighter(results.query) if results else (lambda t: t),
        "badges_of": badges_of,
        "doc_url": doc_url,
        "owned": ownership.owned_marks(
            session, viewer, [h.doc.ref_id for h in results.hits if h.doc.source == "store"]
        )
        if results
        else {},
        "install_tags": hub.install_tags(
            session, [h.doc.name for h in results.hits if h.doc.source == "hub"]
        )
        if results
        else {},
        "facet_titles": {
            "source": "Source",
            "kind": "Type",
            "category": "Category",
            "pricing": "Pricing",
            "badge": "Badges",
            "publisher": "Publisher",
            "platform": "OS / architecture",
        },
    }
    return render(request, "search/results.html", context, status=400 if error else 200)
