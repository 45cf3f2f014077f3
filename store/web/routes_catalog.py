"""The storefront: home, browsing, product pages, and getting or buying a tier."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from store.accounts import service as accounts
from store.accounts.models import Account
from store.billing import ownership
from store.catalog import service as catalog
from store.catalog.models import Product, Tier
from store.deps import DbSession
from store.errors import NotFound, StoreError, ValidationFailed
from store.licensing import entitlements
from store.pagination import Page
from store.registry import explain, hub
from store.search import service as search
from store.search.api import doc_url
from store.signing import service as signing
from store.web.routing import RequiredAccount, Viewer, page_router
from store.web.templating import flash, redirect, render, with_query

router = page_router()

FILTERS = ("kind", "category", "pricing", "badge", "publisher", "platform")
SOURCES = ("store", "hub")  # browse the store's listings (default) or the hub's repositories
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le", "windows/amd64")
MAX_PAGE = 10_000


class BadRequest(StoreError):
    status_code = 400
    code = "bad_request"


def parse_page(raw: str | None) -> int:
    if not raw:
        return 1
    try:
        page = int(raw)
    except ValueError:
        raise BadRequest("page must be a whole number", code="bad_filter") from None
    if not 1 <= page <= MAX_PAGE:
        raise BadRequest(f"page must be between 1 and {MAX_PAGE}", code="bad_filter")
    return page


@router.get("/")
def home(request: Request, session: DbSession, viewer: Viewer) -> Response:
    """Featured official and certified products, categories and what is new."""
    newest = catalog.list_products(session, catalog.ProductFilter(sort="newest"), per_page=8)
    featured = catalog.featured_products(session, limit=8)
    shown = [p.id for p in (*featured, *newest.items)]
    return render(
        request,
        "catalog/home.html",
        {
            "featured": featured,
            "categories": catalog.category_counts(session),
            "newest": newest.items,
            "stats": search.listing_stats(session, shown),
            "owned": ownership.owned_marks(session, viewer, shown),
        },
    )


@router.get("/browse")
def browse(request: Request, session: DbSession, viewer: Viewer) -> Response:
    """Published products, or with ``source=hub`` the hub's repositories the viewer may
    see, through the search engine (the same matches and order as the search box and the
    API), filtered, sorted and paginated. Bad filter values are a 400; an unknown sort order
    falls back to relevance with a notice."""
    params = request.query_params
    chosen = {key: params.get(key, "").strip() for key in (*FILTERS, "q", "sort", "source")}
    if chosen["source"] not in ("", *SOURCES):
        raise BadRequest(f"source must be one of {', '.join(SOURCES)}", code="bad_filter")
    hub_mode = chosen["source"] == "hub"
    sort, notice = search.resolve_sort(chosen["sort"])
    flt = catalog.ProductFilter(
        query=chosen["q"],
        **{key: chosen[key] or None for key in FILTERS},  # type: ignore[arg-type]
    )
    page_number = parse_page(params.get("page"))
    per_page = request.app.state.settings.page_size
    try:
        if hub_mode:
            repos = _search_hub(session, flt, sort, page_number, per_page, viewer)
        else:
            page = _search_products(session, flt, sort, page_number, per_page)
    except ValidationFailed as exc:
        raise BadRequest(exc.detail, code="bad_filter") from exc
    if hub_mode:
        page = Page(items=[], page=repos.page, per_page=repos.per_page, total=repos.total)
    active = {k: v for k, v in chosen.items() if v}
    if notice:
        active.pop("sort", None)
    return render(
        request,
        "catalog/browse.html",
        {
            "page": repos if hub_mode else page,
            "hub_mode": hub_mode,
            "doc_url": doc_url,
            "chosen": {**chosen, "sort": sort},
            "notice": notice,
            "active_filters": [
                (k, v) for k, v in active.items() if k not in ("sort", "q", "source")
            ],
            "page_url": lambda n: with_query("/browse", **{**active, "page": n}),
            "without_filters": with_query(
                "/browse", **{k: v for k, v in active.items() if k in ("q", "sort", "source")}
            ),
            "without": lambda key: with_query(
                "/browse", **{k: v for k, v in active.items() if k != key}
            ),
            "categories": catalog.list_categories(session),
            "publishers": accounts.list_organizations(session),
            "kinds": catalog.KINDS,
            "pricings": catalog.PRICINGS,
            "badges": catalog.BADGES,
            "platforms": sorted(
                {*PLATFORMS, *([chosen["platform"]] if chosen["platform"] else [])}
            ),
            "sorts": list(search.SORTS.items()),
            "stats": search.listing_stats(session, [p.id for p in page.items]),
            "owned": ownership.owned_marks(session, viewer, [p.id for p in page.items]),
        },
    )


def _search_products(
    session: DbSession, flt: catalog.ProductFilter, sort: str, page: int, per_page: int
) -> Page[Product]:
    """Published store listings as the search engine finds and orders them. A page past
    the last one is empty (the page offers the way back)."""
    flt.validate()
    filters = search.make_filters(
        source="store",
        kind=flt.kind,
        category=flt.category,
        pricing=flt.pricing,
        badge=flt.badge,
        publisher=flt.publisher,
        platform=flt.platform,
    )
    if page * per_page > search.MAX_WINDOW:
        first = search.search(session, q=flt.query, filters=filters, per_page=per_page)
        return Page(items=[], page=page, per_page=per_page, total=first.total)
    results = search.search(
        session, q=flt.query, filters=filters, page=page, per_page=per_page, sort=sort
    )
    products = catalog.products_by_id(session, [h.doc.ref_id for h in results.hits])
    items = [products[h.doc.ref_id] for h in results.hits if h.doc.ref_id in products]
    return Page(items=items, page=page, per_page=per_page, total=results.total)


def _search_hub(
    session: DbSession,
    flt: catalog.ProductFilter,
    sort: str,
    page: int,
    per_page: int,
    viewer: Account | None,
) -> Page[Any]:
    """Hub repositories the viewer may see (search documents), as the search engine finds
    and orders them; the badge filter picks official, certified, verified publishers' or
    community repositories."""
    flt.validate()
    filters = search.make_filters(
        source="hub", kind=flt.kind, badge=flt.badge, publisher=flt.publisher
    )
    if page * per_page > search.MAX_WINDOW:
        first = search.search(session, q=flt.query, filters=filters, per_page=per_page)
        return Page(items=[], page=page, per_page=per_page, total=first.total)
    results = search.search(
        session,
        q=flt.query,
        filters=filters,
        account=viewer,
        page=page,
        per_page=per_page,
        sort=sort,
    )
    docs = [h.doc for h in results.hits]
    return Page(items=docs, page=page, per_page=per_page, total=results.total)


def _product(session: DbSession, org: str, name: str, viewer: Account | None) -> Product:
    return catalog.get_visible_product(session, f"{org}/{name}", viewer)


def _tier(session: DbSession, product: Product, slug: str) -> Tier:
    tier = catalog.get_tier_by_slug(session, product, slug)
    if not tier.active:
        raise NotFound("This tier is not available")
    return tier


@router.get("/products/{org}/{name}")
def product_page(
    request: Request, org: str, name: str, session: DbSession, viewer: Viewer
) -> Response:
    """A product's listing, tiers and prices, pull command and the viewer's access."""
    product = _product(session, org, name, viewer)
    tags = signing.tag_statuses(session, product)  # newest first
    return render(
        request,
        "catalog/product.html",
        {
            "product": product,
            "tiers": product.active_tiers,
            "access": explain.access_for(session, viewer, product),
            "can_edit": accounts.has_role(session, viewer, product.organization, "viewer"),
            "signed_in": viewer is not None,
            "tags": tags,
            "install_tag": hub.pick_install_tag([t.tag for t in tags]),
            "owned": ownership.owned_by(session, viewer, product) if viewer else [],
        },
    )


@router.post("/products/{org}/{name}/tiers/{tier}/get")
def get_free_tier(
    request: Request, org: str, name: str, tier: str, session: DbSession, account: RequiredAccount
) -> Response:
    """The "Get" button of a free tier: access at once, listed under My content."""
    product = _product(session, org, name, account)
    chosen = _tier(session, product, tier)
    entitlements.get_free_tier(session, account=account, tier=chosen)
    flash(request, f"{product.title} ({chosen.name}) is in your content now.")
    return redirect("/my/content")
