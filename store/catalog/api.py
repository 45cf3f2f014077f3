"""JSON API: browsing the catalog, and publishers editing products and tiers."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, BackgroundTasks, Query, Request, status

from store.accounts import service as accounts
from store.accounts.caller import AdminAccount, Caller, CurrentAccount
from store.catalog import events, service
from store.catalog.models import Product
from store.catalog.schemas import (
    BadgesIn,
    CategoryCount,
    ProductIn,
    ProductOut,
    ProductPage,
    ProductSummary,
    ProductUpdate,
    StatusIn,
    TierIn,
    TierOut,
    TierUpdate,
)
from store.deps import DbSession
from store.errors import Conflict

router = APIRouter(tags=["catalog"])


def follow_after_response(
    request: Request, background: BackgroundTasks, product_id: uuid.UUID
) -> None:
    """The payment gateway follows an edit of the product once it committed, after the
    response (store.catalog.events): the edit never waits on it."""
    after: events.AfterEdit = request.app.state.after_catalog_edit
    background.add_task(after, product_id)


def _detail(session: DbSession, product: Product, caller_can_edit: bool) -> ProductOut:
    out = ProductOut.model_validate(product)
    if caller_can_edit:
        out.all_tiers = [TierOut.model_validate(t) for t in product.tiers]
    return out


@router.get("/products", response_model=ProductPage)
def browse(
    session: DbSession,
    caller: Caller,
    q: str = Query(default="", max_length=200, description="Words in the title or summary"),
    kind: str | None = Query(default=None, description="image or plugin"),
    category: str | None = None,
    pricing: str | None = Query(default=None, description="free, paid or trial"),
    badge: str | None = Query(default=None, description="official, certified or verified"),
    publisher: str | None = Query(default=None, description="Organization slug"),
    platform: str | None = Query(default=None, description="e.g. linux/arm64"),
    status_filter: str | None = Query(
        default=None, alias="status", description="Admins only: draft, published or suspended"
    ),
    sort: str = Query(default="featured", description="featured, newest or title"),
    page: int = Query(default=1, ge=1, le=10_000),
    per_page: int = Query(default=24, ge=1, le=100),
) -> ProductPage:
    """Published products, filtered and paginated. Admins may list other statuses."""
    status_value = "published"
    if status_filter and caller.account is not None and caller.account.is_admin:
        status_value = status_filter
    flt = service.ProductFilter(
        query=q,
        kind=kind,
        category=category,
        pricing=pricing,
        badge=badge,
        publisher=publisher,
        platform=platform,
        status=status_value,
        sort=sort,
    )
    result = service.list_products(session, flt, page=page, per_page=per_page)
    return ProductPage(
        items=[ProductSummary.model_validate(p) for p in result.items],
        page=result.page,
        per_page=result.per_page,
        total=result.total,
        pages=result.pages,
    )


@router.get("/categories", response_model=list[CategoryCount])
def categories(session: DbSession) -> list[CategoryCount]:
    """Categories with the number of published products in each."""
    counts = dict((c.slug, n) for c, n in service.category_counts(session))
    return [
        CategoryCount(slug=c.slug, name=c.name, count=counts.get(c.slug, 0))
        for c in service.list_categories(session)
    ]


@router.post("/orgs/{org}/products", status_code=status.HTTP_201_CREATED, response_model=ProductOut)
def create_product(
    org: str, body: ProductIn, account: CurrentAccount, session: DbSession
) -> ProductOut:
    """Create a draft product bound to the repository `<org>/<slug>`."""
    organization = accounts.get_organization(session, org)
    data = body.model_dump()
    product = service.create_product(
        session,
        actor=account,
        org=organization,
        kind=data.pop("kind"),
        slug=data.pop("slug"),
        title=data.pop("title"),
        **data,
    )
    return _detail(session, product, True)


@router.get("/products/{org}/{name}", response_model=ProductOut)
def get_product(org: str, name: str, caller: Caller, session: DbSession) -> ProductOut:
    product = service.get_visible_product(session, f"{org}/{name}", caller.account)
    can_edit = accounts.has_role(session, caller.account, product.organization, "viewer")
    return _detail(session, product, can_edit)


@router.patch("/products/{org}/{name}", response_model=ProductOut)
def update_product(
    org: str, name: str, body: ProductUpdate, account: CurrentAccount, session: DbSession
) -> ProductOut:
    product = service.get_visible_product(session, f"{org}/{name}", account)
    service.update_product(
        session, actor=account, product=product, **body.model_dump(exclude_unset=True)
    )
    return _detail(session, product, True)


@router.delete("/products/{org}/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_product(org: str, name: str, account: CurrentAccount, session: DbSession) -> None:
    """Delete a draft product that has no customers."""
    product = service.get_visible_product(session, f"{org}/{name}", account)
    service.delete_product(session, actor=account, product=product)


@router.post("/products/{org}/{name}/status", response_model=ProductOut)
def set_status(
    org: str,
    name: str,
    body: StatusIn,
    account: CurrentAccount,
    session: DbSession,
    request: Request,
    background: BackgroundTasks,
) -> ProductOut:
    """Publish or unpublish (publishers); suspend or reinstate with a reason (admins)."""
    product = service.get_visible_product(session, f"{org}/{name}", account)
    service.set_status(
        session, actor=account, product=product, status=body.status, reason=body.reason
    )
    follow_after_response(request, background, product.id)
    return _detail(session, product, True)


@router.post("/products/{org}/{name}/badges", response_model=ProductOut, tags=["admin"])
def set_badges(
    org: str, name: str, body: BadgesIn, admin: AdminAccount, session: DbSession
) -> ProductOut:
    """Mark a product official (store-curated), or remove its certified badge. Certifying
    goes through the certification review (`/api/v1/admin/certification/...`): 409 here."""
    if body.certified:
        raise Conflict(service.CERTIFY_THROUGH_REVIEW, code="certify_through_review")
    product = service.get_product_by_repository(session, f"{org}/{name}")
    service.set_badges(
        session, actor=admin, product=product, official=body.official, certified=body.certified
    )
    return _detail(session, product, True)


@router.get("/products/{org}/{name}/tiers", response_model=list[TierOut])
def list_tiers(org: str, name: str, caller: Caller, session: DbSession) -> object:
    product = service.get_visible_product(session, f"{org}/{name}", caller.account)
    if accounts.has_role(session, caller.account, product.organization, "viewer"):
        return product.tiers
    return product.active_tiers


@router.post(
    "/products/{org}/{name}/tiers", status_code=status.HTTP_201_CREATED, response_model=TierOut
)
def create_tier(
    org: str,
    name: str,
    body: TierIn,
    account: CurrentAccount,
    session: DbSession,
    request: Request,
    background: BackgroundTasks,
) -> object:
    product = service.get_visible_product(session, f"{org}/{name}", account)
    data = body.model_dump(exclude_none=True)
    tier = service.create_tier(
        session, actor=account, product=product, slug=data.pop("slug"), **data
    )
    follow_after_response(request, background, product.id)
    return tier


@router.patch("/products/{org}/{name}/tiers/{tier}", response_model=TierOut)
def update_tier(
    org: str,
    name: str,
    tier: str,
    body: TierUpdate,
    account: CurrentAccount,
    session: DbSession,
    request: Request,
    background: BackgroundTasks,
) -> object:
    """Edit a tier. Existing customers keep what they bought; price changes apply to new
    purchases only."""
    product = service.get_visible_product(session, f"{org}/{name}", account)
    tier_obj = service.get_tier_by_slug(session, product, tier)
    edited = service.update_tier(
        session, actor=account, tier=tier_obj, **body.model_dump(exclude_unset=True)
    )
    follow_after_response(request, background, product.id)
    return edited
