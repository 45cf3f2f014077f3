"""JSON API: GET /api/v1/search."""

from __future__ import annotations

from fastapi import APIRouter

from store.accounts.caller import Caller
from store.billing import ownership
from store.deps import DbSession
from store.search import service
from store.search.models import SearchDocument
from store.search.query import BadQuery
from store.search.schemas import FacetValueOut, OwnedOut, PriceRange, SearchHitOut, SearchPage

router = APIRouter(tags=["search"])


def int_param(value: str | None, name: str, default: int) -> int:
    """Integers from the query string; anything else is a clean 400, never a 422 or 500."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number") from None
    if not -(10**9) < number < 10**9:
        raise BadQuery(f"{name} is out of range")
    return number


def doc_url(doc: SearchDocument) -> str | None:
    """The listing's page, or the hub repository's (``/r/<namespace>/<name>``; deeper
    sub-repositories have no page of their own)."""
    if doc.source == "store":
        return f"/products/{doc.name}"
    return f"/r/{doc.name}" if doc.name.count("/") == 1 else None


def badges_of(doc: SearchDocument) -> list[str]:
    return [b for b in ("official", "certified", "verified") if getattr(doc, b)]


def hit_out(hit: service.Hit, owned: ownership.OwnedMark | None = None) -> SearchHitOut:
    d = hit.doc
    price = None
    if d.price_min is not None and d.price_max is not None:
        price = PriceRange(min_minor=d.price_min, max_minor=d.price_max, currency=d.currency)
    return SearchHitOut(
        source=d.source,
        name=d.name,
        title=d.title,
        summary=d.summary,
        kind=d.kind,
        publisher=d.publisher,
        publisher_name=d.publisher_name,
        badges=badges_of(d),
        pricing=list(d.pricing),
        price=price,
        categories=list(d.categories),
        platforms=list(d.platforms),
        pull_count=d.pull_count,
        star_count=d.star_count,
        status=d.status,
        entitled=hit.entitled,
        owned=OwnedOut(label=owned.label, manage_url=owned.manage_url) if owned else None,
        url=doc_url(d),
    )


@router.get("/search", response_model=SearchPage)
def search(
    session: DbSession,
    caller: Caller,
    q: str = "",
    source: str | None = None,
    kind: str | None = None,
    category: str | None = None,
    pricing: str | None = None,
    badge: str | None = None,
    publisher: str | None = None,
    platform: str | None = None,
    page: str | None = None,
    per_page: str | None = None,
    as_you_type: bool = True,
    sort: str | None = None,
) -> SearchPage:
    """Search store listings and hub repositories you may see, with facet counts.

    `q` takes words (all must match), "quoted phrases", -exclusions, `OR` and `prefix*`.
    Ranking: exact name, badges, field relevance (name > title > summary > description),
    popularity; `sort` orders by pulls (30 days), stars, updated, price or title instead
    (an unknown value falls back to relevance, with a `notice`). The last word is also a
    prefix (`as_you_type`, on by default). Totals and facet counts are exact up to 500
    matches (`total_exact` false beyond: they describe the best 500), and results are
    served up to the 500th. Invalid input is a 400 with code `bad_query`.
    """
    filters = service.make_filters(
        source=source,
        kind=kind,
        category=category,
        pricing=pricing,
        badge=badge,
        publisher=publisher,
        platform=platform,
    )
    chosen_sort, notice = service.resolve_sort(sort)
    results = service.search(
        session,
        q=q,
        filters=filters,
        account=caller.account,
        page=int_param(page, "page", 1),
        per_page=int_param(per_page, "per_page", 25),
        as_you_type=as_you_type,
        sort=chosen_sort,
    )
    marks = ownership.owned_marks(
        session, caller.account, [h.doc.ref_id for h in results.hits if h.doc.source == "store"]
    )
    return SearchPage(
        query=q,
        page=results.page,
        per_page=results.per_page,
        total=results.total,
        total_exact=results.total_exact,
        pages=results.pages,
        results=[
            hit_out(h, marks.get(h.doc.ref_id) if h.doc.source == "store" else None)
            for h in results.hits
        ],
        facets={
            name: [FacetValueOut(**vars(v)) for v in values]
            for name, values in results.facets.items()
        },
        sort=results.sort,
        notice=notice,
        did_you_mean=service.did_you_mean(session, results, caller.account),
    )
