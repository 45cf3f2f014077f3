"""Publishers editing a product: listing, tiers, publishing, customers and grants."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import BackgroundTasks, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.catalog import service as catalog
from store.catalog.api import follow_after_response
from store.catalog.models import Product, Tier
from store.catalog.periods import BillingKind
from store.db import utcnow
from store.deps import DbSession
from store.errors import NotFound, ValidationFailed
from store.licensing import entitlements
from store.registry import hub
from store.web import charts, forms
from store.web.forms import Form, FormState
from store.web.routes_publisher import PULL_DAYS, member_org
from store.web.routing import RequiredAccount, page_router
from store.web.templating import format_price, render

router = page_router()

LISTING_URLS = ("logo_url", "docs_url", "support_url", "eula_url")


def listing_fields(form: FormData) -> dict[str, Any]:
    data: dict[str, Any] = {
        key: forms.text(form, key) for key in ("title", "summary", "description_md")
    }
    data.update({key: forms.text(form, key) for key in LISTING_URLS})
    data["categories"] = [c.lower() for c in forms.split_list(forms.text(form, "categories"))]
    data["platforms"] = forms.split_list(forms.text(form, "platforms"))
    return data


def tier_fields(form: FormData, *, billing: str) -> dict[str, Any]:
    currency = forms.text(form, "currency").strip().lower() or "usd"
    return {
        "name": forms.text(form, "name"),
        "description": forms.text(form, "description"),
        "billing": billing,
        "currency": currency,
        "amount_minor": forms.price_minor(forms.text(form, "price"), currency),
        "trial_days": forms.optional_int(form, "trial_days", what="Trial days", low=0, high=365)
        or 0,
        "seats": forms.optional_int(form, "seats", what="Seats", low=1, high=1_000_000),
        "features": forms.lines(forms.text(form, "features")),
        "public": forms.checkbox(form, "public"),
    }


# --- new product ----------------------------------------------------------------------


def _new_page(
    request: Request, org: Organization, form: FormState = forms.NO_FORM, status: int = 200
) -> Response:
    return render(
        request,
        "publisher/product_new.html",
        {"org": org, "kinds": catalog.KINDS, "form": form},
        status=status,
    )


@router.get("/publish/{org}/new")
def new_product_page(
    request: Request, org: str, session: DbSession, account: RequiredAccount
) -> Response:
    organization = member_org(session, account, org)
    accounts.require_role(session, account, organization, "editor")
    return _new_page(request, organization)


@router.post("/publish/{org}/new")
def create_product(
    request: Request, org: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Create a draft product delivered from the repository ``<org>/<slug>``."""
    organization = member_org(session, account, org)

    def create() -> Product:
        if forms.text(form, "slug").strip().lower() == "new":
            # "/publish/<org>/new" is this form, so such a product could never be edited here.
            raise ValidationFailed("The name 'new' is reserved; choose another", field="slug")
        return catalog.create_product(
            session,
            actor=account,
            org=organization,
            kind=forms.text(form, "kind"),
            slug=forms.text(form, "slug"),
            **listing_fields(form),
        )

    return forms.submit(
        session,
        form,
        "product",
        create,
        failed=lambda state, status: _new_page(request, organization, state, status),
        done=lambda product: forms.redirect_with(
            request,
            f"{product.repository} is created as a draft. Add a tier, then publish it.",
            f"/publish/{product.repository}",
        ),
    )


# --- edit -----------------------------------------------------------------------------


def _member_product(session: DbSession, account: Account, org: str, name: str) -> Product:
    organization = member_org(session, account, org)
    product = catalog.get_product_by_repository(session, f"{organization.slug}/{name}")
    return product


def _tier_of(session: DbSession, product: Product, slug: str) -> Tier:
    return catalog.get_tier_by_slug(session, product, slug)


def product_page(
    request: Request,
    session: DbSession,
    account: Account,
    product: Product,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    org = product.organization
    is_owner = accounts.has_role(session, account, org, "owner")
    now = utcnow()
    held = entitlements.entitlements_of_product(session, product) if is_owner else []
    return render(
        request,
        "publisher/product_edit.html",
        {
            "product": product,
            "org": org,
            "is_owner": is_owner,
            "can_edit": accounts.has_role(session, account, org, "editor"),
            "billings": [(kind.value, kind.choice_label) for kind in BillingKind.choices()],
            "customers": [(e, e.effective_status(now)) for e in held],
            "price_text": forms.price_text,
            "tier_options": [
                (t.slug, f"{t.name} — {format_price(t)}") for t in product.active_tiers
            ],
            "pulls_chart": charts.pulls_chart(
                hub.pull_history(session, name=product.repository, days=PULL_DAYS).days,
                chart_id="product-pulls",
                subject=product.repository,
            ),
            "pull_days": PULL_DAYS,
            "form": form,
        },
        status=status,
    )


@router.get("/publish/{org}/{name}")
def edit_product_page(
    request: Request, org: str, name: str, session: DbSession, account: RequiredAccount
) -> Response:
    return product_page(request, session, account, _member_product(session, account, org, name))


def _submit(
    request: Request,
    session: DbSession,
    account: Account,
    product: Product,
    form: FormData,
    form_name: str,
    action: Callable[[], object],
    message: str,
) -> Response:
    """Run one of the product page's forms: re-render the page with its input and message,
    or flash and go back."""
    return forms.submit(
        session,
        form,
        form_name,
        action,
        failed=partial(product_page, request, session, account, product),
        done=lambda _: forms.redirect_with(request, message, f"/publish/{product.repository}"),
    )


@router.post("/publish/{org}/{name}")
def update_product(
    request: Request, org: str, name: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    product = _member_product(session, account, org, name)
    return _submit(
        request,
        session,
        account,
        product,
        form,
        "listing",
        lambda: catalog.update_product(
            session, actor=account, product=product, **listing_fields(form)
        ),
        "Listing saved.",
    )


@router.post("/publish/{org}/{name}/status")
def set_status(
    request: Request,
    org: str,
    name: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
    background: BackgroundTasks,
) -> Response:
    """Publish a draft, or take a published product back to draft."""
    product = _member_product(session, account, org, name)
    status = forms.text(form, "status")
    message = (
        "Published: it is listed in the store now."
        if status == "published"
        else ("Unpublished: the product is a draft again.")
    )
    follow_after_response(request, background, product.id)
    return _submit(
        request,
        session,
        account,
        product,
        form,
        "status",
        lambda: catalog.set_status(session, actor=account, product=product, status=status),
        message,
    )


@router.post("/publish/{org}/{name}/tiers")
def create_tier(
    request: Request,
    org: str,
    name: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
    background: BackgroundTasks,
) -> Response:
    product = _member_product(session, account, org, name)
    follow_after_response(request, background, product.id)
    return _submit(
        request,
        session,
        account,
        product,
        form,
        "tier-new",
        lambda: catalog.create_tier(
            session,
            actor=account,
            product=product,
            slug=forms.text(form, "slug"),
            **tier_fields(form, billing=forms.text(form, "billing")),
        ),
        "Tier added.",
    )


@router.post("/publish/{org}/{name}/tiers/{tier}")
def update_tier(
    request: Request,
    org: str,
    name: str,
    tier: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
    background: BackgroundTasks,
) -> Response:
    """Edit a tier (new purchases only), or deactivate and reactivate it."""
    product = _member_product(session, account, org, name)
    chosen = _tier_of(session, product, tier)
    action = forms.text(form, "action")

    def change() -> Tier:
        if action in ("deactivate", "activate"):
            return catalog.update_tier(
                session, actor=account, tier=chosen, active=action == "activate"
            )
        data = tier_fields(form, billing=forms.text(form, "billing") or chosen.billing)
        return catalog.update_tier(session, actor=account, tier=chosen, **data)

    message = {"deactivate": "Tier deactivated.", "activate": "Tier activated."}.get(
        action, "Tier saved."
    )
    follow_after_response(request, background, product.id)
    return _submit(request, session, account, product, form, f"tier-{chosen.slug}", change, message)


@router.post("/publish/{org}/{name}/grants")
def grant(
    request: Request, org: str, name: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Give an account a tier without payment (owners only)."""
    product = _member_product(session, account, org, name)
    return _submit(
        request,
        session,
        account,
        product,
        form,
        "grant",
        lambda: entitlements.grant(
            session,
            actor=account,
            tier=_tier_of(session, product, forms.text(form, "tier")),
            account=accounts.get_account_by_username(session, forms.text(form, "username")),
            ends_at=forms.end_of_day(form, "ends_on"),
            reason=forms.text(form, "reason"),
        ),
        f"Access granted to {forms.text(form, 'username').strip().lower()}.",
    )


@router.post("/publish/{org}/{name}/entitlements/{entitlement_id}/revoke")
def revoke(
    request: Request,
    org: str,
    name: str,
    entitlement_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    product = _member_product(session, account, org, name)
    entitlement = entitlements.get_entitlement(session, entitlement_id)
    if entitlement.product_id != product.id:
        raise NotFound("No such entitlement")
    return _submit(
        request,
        session,
        account,
        product,
        form,
        f"revoke-{entitlement.id}",
        lambda: entitlements.revoke(
            session, entitlement=entitlement, actor=account, reason=forms.text(form, "reason")
        ),
        "Access revoked.",
    )
