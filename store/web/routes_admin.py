"""Administration: publisher verification, moderation, badges, accounts and entitlements."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi import BackgroundTasks, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.catalog.api import follow_after_response
from store.db import utcnow
from store.deps import DbSession, get_settings
from store.errors import StoreError, ValidationFailed
from store.licensing import entitlements
from store.licensing.models import Entitlement
from store.web import forms
from store.web.forms import Form, FormState
from store.web.routes_catalog import BadRequest, parse_page
from store.web.routing import AdminAccount, page_router, safe_next
from store.web.templating import render, with_query

router = page_router()


def _back(form: FormData, default: str) -> str:
    target = safe_next(forms.text(form, "next"), default)
    return target if target.startswith("/admin") else default


def _button(
    request: Request,
    session: DbSession,
    form: FormData,
    default: str,
    action: Callable[[], object],
    message: str,
) -> Response:
    """Button forms: flash the outcome (or the service's refusal) and go back to the list."""
    back = _back(form, default)
    return forms.submit(
        session,
        form,
        "button",
        action,
        failed=forms.refused_back(request, back),
        done=lambda _: forms.redirect_with(request, message, back),
    )


# --- publishers -----------------------------------------------------------------------


@router.get("/admin")
def overview(request: Request, session: DbSession, admin: AdminAccount) -> Response:
    """Publishers waiting for verification, and every organization."""
    orgs = accounts.list_organizations(session)
    return render(
        request,
        "admin/index.html",
        {
            "queue": [o for o in orgs if o.verification_requested_at and not o.verified],
            "orgs": orgs,
            "section": "publishers",
        },
    )


@router.post("/admin/orgs/{slug}/verification")
def verify(
    request: Request, slug: str, session: DbSession, admin: AdminAccount, form: Form
) -> Response:
    org = accounts.get_organization(session, slug)
    decision = forms.text(form, "decision")

    def decide() -> object:
        if decision not in ("verify", "reject"):
            raise ValidationFailed("Choose verify or reject")
        return accounts.set_verified(
            session,
            org=org,
            actor=admin,
            verified=decision == "verify",
            note=forms.text(form, "note"),
            settings=get_settings(request),
        )

    message = (
        f"{org.slug} is verified." if decision == "verify" else (f"{org.slug} is not verified.")
    )
    return _button(request, session, form, "/admin", decide, message)


# --- products -------------------------------------------------------------------------


@router.get("/admin/products")
def products(request: Request, session: DbSession, admin: AdminAccount) -> Response:
    """Every product, any status, with badge and moderation controls (certification: a
    link to its review, and removal)."""
    status = request.query_params.get("status", "").strip()
    query = request.query_params.get("q", "").strip()
    flt = catalog.ProductFilter(query=query, status=status or None, sort="title")
    try:
        page = catalog.list_products(
            session, flt, page=parse_page(request.query_params.get("page")), per_page=50
        )
    except ValidationFailed as exc:
        raise BadRequest(exc.detail, code="bad_filter") from exc
    return render(
        request,
        "admin/products.html",
        {
            "page": page,
            "status": status,
            "query": query,
            "statuses": catalog.STATUSES,
            "page_url": lambda n: with_query("/admin/products", status=status, q=query, page=n),
            "here": with_query("/admin/products", status=status, q=query, page=page.page),
            "section": "products",
        },
    )


@router.post("/admin/products/{org}/{name}/badges")
def badges(
    request: Request, org: str, name: str, session: DbSession, admin: AdminAccount, form: Form
) -> Response:
    """The official badge. (Certification goes through the review at /admin/certification,
    which ties it to a signed digest; this form cannot certify.)"""
    product = catalog.get_product_by_repository(session, f"{org}/{name}")
    return _button(
        request,
        session,
        form,
        "/admin/products",
        lambda: catalog.set_badges(
            session, actor=admin, product=product, official=forms.checkbox(form, "official")
        ),
        f"Badges of {product.repository} saved.",
    )


@router.post("/admin/products/{org}/{name}/uncertify")
def uncertify(
    request: Request, org: str, name: str, session: DbSession, admin: AdminAccount, form: Form
) -> Response:
    """Remove the certified badge: this voids the certification (no digest is certified
    while the product is not); a new one needs an approved review."""
    product = catalog.get_product_by_repository(session, f"{org}/{name}")
    return _button(
        request,
        session,
        form,
        "/admin/products",
        lambda: catalog.set_badges(session, actor=admin, product=product, certified=False),
        f"The certification of {product.repository} is removed.",
    )


@router.post("/admin/products/{org}/{name}/status")
def moderate(
    request: Request,
    org: str,
    name: str,
    session: DbSession,
    admin: AdminAccount,
    form: Form,
    background: BackgroundTasks,
) -> Response:
    """Suspend a product (a reason is required) or reinstate it."""
    product = catalog.get_product_by_repository(session, f"{org}/{name}")
    status = forms.text(form, "status")
    follow_after_response(request, background, product.id)
    return _button(
        request,
        session,
        form,
        "/admin/products",
        lambda: catalog.set_status(
            session, actor=admin, product=product, status=status, reason=forms.text(form, "reason")
        ),
        f"{product.repository} is {status} now.",
    )


# --- accounts -------------------------------------------------------------------------


@router.get("/admin/accounts")
def account_list(request: Request, session: DbSession, admin: AdminAccount) -> Response:
    query = request.query_params.get("q", "").strip()[:100]
    return render(
        request,
        "admin/accounts.html",
        {
            "accounts": accounts.list_accounts(session, query=query),
            "query": query,
            "admin": admin,
            "here": with_query("/admin/accounts", q=query),
            "section": "accounts",
        },
    )


@router.post("/admin/accounts/{username}/{flag}")
def account_flag(
    request: Request,
    username: str,
    flag: str,
    session: DbSession,
    admin: AdminAccount,
    form: Form,
) -> Response:
    """Make or unmake an administrator; disable or enable an account."""
    target = accounts.get_account_by_username(session, username)
    value = forms.checkbox(form, "value")

    def change() -> object:
        if flag not in ("admin", "active"):
            raise ValidationFailed("Unknown setting")
        if target.id == admin.id and not value:
            raise ValidationFailed(
                "You cannot remove your own administrator rights or disable yourself"
            )
        if flag == "admin":
            return accounts.set_admin(session, account=target, is_admin=value, actor=admin)
        return accounts.set_active(session, account=target, active=value, actor=admin)

    words = {
        ("admin", True): "is an administrator",
        ("admin", False): "is no longer an administrator",
        ("active", True): "is enabled",
        ("active", False): "is disabled",
    }
    message = f"{target.username} {words.get((flag, value), 'is updated')}."
    return _button(request, session, form, "/admin/accounts", change, message)


# --- entitlements ---------------------------------------------------------------------


def _entitlements_page(
    request: Request,
    session: DbSession,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    username = request.query_params.get("username", "").strip()
    repository = request.query_params.get("product", "").strip()
    rows: list[Entitlement] = []
    lookup_error = ""
    try:
        if username:
            rows = entitlements.entitlements_of(
                session, accounts.get_account_by_username(session, username)
            )
        elif repository:
            rows = entitlements.entitlements_of_product(
                session, catalog.get_product_by_repository(session, repository)
            )
    except StoreError as exc:
        lookup_error = exc.detail
    now = utcnow()
    return render(
        request,
        "admin/entitlements.html",
        {
            "username": username,
            "repository": repository,
            "rows": [(e, e.effective_status(now)) for e in rows],
            "lookup_error": lookup_error,
            "here": with_query("/admin/entitlements", username=username, product=repository),
            "form": form,
            "section": "entitlements",
        },
        status=status,
    )


@router.get("/admin/entitlements")
def entitlement_list(request: Request, session: DbSession, admin: AdminAccount) -> Response:
    return _entitlements_page(request, session)


@router.post("/admin/entitlements")
def admin_grant(request: Request, session: DbSession, admin: AdminAccount, form: Form) -> Response:
    """Grant any account a tier of any product, without payment."""

    def give() -> Entitlement:
        product = catalog.get_product_by_repository(session, forms.text(form, "product"))
        return entitlements.grant(
            session,
            actor=admin,
            tier=catalog.get_tier_by_slug(session, product, forms.text(form, "tier").strip()),
            account=accounts.get_account_by_username(session, forms.text(form, "username")),
            ends_at=forms.end_of_day(form, "ends_on"),
            reason=forms.text(form, "reason"),
        )

    return forms.submit(
        session,
        form,
        "grant",
        give,
        failed=lambda state, status: _entitlements_page(request, session, state, status),
        done=lambda granted: forms.redirect_with(
            request,
            f"{granted.product.repository} ({granted.tier.name}) granted.",
            with_query("/admin/entitlements", username=forms.text(form, "username")),
        ),
    )


@router.post("/admin/entitlements/{entitlement_id}/revoke")
def admin_revoke(
    request: Request, entitlement_id: uuid.UUID, session: DbSession, admin: AdminAccount, form: Form
) -> Response:
    entitlement = entitlements.get_entitlement(session, entitlement_id)
    return _button(
        request,
        session,
        form,
        "/admin/entitlements",
        lambda: entitlements.revoke(
            session, entitlement=entitlement, actor=admin, reason=forms.text(form, "reason")
        ),
        "Entitlement revoked.",
    )
