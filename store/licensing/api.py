"""JSON API: entitlements (get a free tier, grant, revoke), their licenses, and "why can't
I pull?"."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, status
from fastapi.responses import Response

from store.accounts import service as accounts
from store.accounts.caller import CurrentAccount
from store.catalog import service as catalog
from store.db import utcnow
from store.deps import DbSession, SettingsDep, writes_on_read
from store.errors import Forbidden
from store.licensing import entitlements, service
from store.licensing.models import Entitlement, License
from store.licensing.public import Keyring, lic_response
from store.licensing.schemas import (
    EntitlementOut,
    GrantIn,
    LicenseKeyOut,
    LicenseOut,
    RevokeIn,
)
from store.security_headers import NO_STORE

router = APIRouter(tags=["entitlements"])


def entitlement_out(e: Entitlement) -> EntitlementOut:
    holder = f"user:{e.account.username}" if e.account else f"org:{e.organization.slug}"  # type: ignore[union-attr]
    return EntitlementOut.model_validate(
        {
            "id": e.id,
            "holder": holder,
            "product": e.product,
            "tier": e.tier,
            "source": e.source,
            "status": e.status,
            "effective_status": e.effective_status(utcnow()),
            "starts_at": e.starts_at,
            "ends_at": e.ends_at,
            "grace_until": e.grace_until,
            "seats": e.seats,
            "features": e.features,
            "reason": e.reason,
            "revoked_at": e.revoked_at,
            "created_at": e.created_at,
        }
    )


@router.get("/me/entitlements", response_model=list[EntitlementOut])
def my_entitlements(account: CurrentAccount, session: DbSession) -> list[EntitlementOut]:
    """Everything the caller may use: its own entitlements and its organizations'."""
    return [entitlement_out(e) for e in entitlements.entitlements_of(session, account)]


@router.post(
    "/products/{org}/{name}/tiers/{tier}/get",
    status_code=status.HTTP_201_CREATED,
    response_model=EntitlementOut,
)
def get_free(
    org: str, name: str, tier: str, account: CurrentAccount, session: DbSession
) -> EntitlementOut:
    """The "Get" button of a free tier: the entitlement is active at once. Paid tiers answer 402."""
    product = catalog.get_visible_product(session, f"{org}/{name}", account)
    tier_obj = catalog.get_tier_by_slug(session, product, tier)
    return entitlement_out(entitlements.get_free_tier(session, account=account, tier=tier_obj))


@router.post("/entitlements", status_code=status.HTTP_201_CREATED, response_model=EntitlementOut)
def grant(body: GrantIn, account: CurrentAccount, session: DbSession) -> EntitlementOut:
    """Grant a tier to an account or organization without payment (admins and the
    publisher's owners)."""
    product = catalog.get_product_by_repository(session, body.repository)
    tier = catalog.get_tier_by_slug(session, product, body.tier)
    holder = accounts.get_account_by_username(session, body.username) if body.username else None
    org = accounts.get_organization(session, body.organization) if body.organization else None
    return entitlement_out(
        entitlements.grant(
            session,
            actor=account,
            tier=tier,
            account=holder,
            org=org,
            ends_at=body.ends_at,
            reason=body.reason,
        )
    )


@router.get("/entitlements/{entitlement_id}", response_model=EntitlementOut)
def get_entitlement(
    entitlement_id: uuid.UUID, account: CurrentAccount, session: DbSession
) -> EntitlementOut:
    return entitlement_out(entitlements.get_visible_entitlement(session, entitlement_id, account))


@router.post("/entitlements/{entitlement_id}/revoke", response_model=EntitlementOut)
def revoke(
    entitlement_id: uuid.UUID, body: RevokeIn, account: CurrentAccount, session: DbSession
) -> EntitlementOut:
    """Revoke for good, with a reason; every license issued for it is revoked too."""
    entitlement = entitlements.get_visible_entitlement(session, entitlement_id, account)
    return entitlement_out(
        entitlements.revoke(session, entitlement=entitlement, actor=account, reason=body.reason)
    )


@router.get("/products/{org}/{name}/entitlements", response_model=list[EntitlementOut])
def product_entitlements(
    org: str, name: str, account: CurrentAccount, session: DbSession
) -> list[EntitlementOut]:
    """The product's customers (the publisher's owners and admins)."""
    product = catalog.get_visible_product(session, f"{org}/{name}", account)
    if not accounts.has_role(session, account, product.organization, "owner"):
        raise Forbidden("Only the publisher's owners see its customers")
    return [entitlement_out(e) for e in entitlements.entitlements_of_product(session, product)]


# --- licenses ---------------------------------------------------------------------------


def license_out(document: License) -> LicenseOut:
    claims = service.decode_payload(document.token)
    grace = claims.get("grace_until")
    return LicenseOut(
        id=document.id,
        entitlement_id=document.entitlement_id,
        kid=document.kid,
        token=document.token,
        issued_at=document.issued_at,
        not_before=document.not_before,
        expires_at=document.expires_at,
        grace_until=datetime.fromtimestamp(grace, UTC) if grace is not None else None,
        revoked_at=document.revoked_at,
        filename=service.license_file(document)[0],
        claims=claims,
    )


@router.get("/licenses/keys", response_model=list[LicenseKeyOut], tags=["licenses"])
def license_keys(
    session: DbSession, keyring: Keyring, settings: SettingsDep
) -> list[LicenseKeyOut]:
    """The public keys that verify licenses, as PEM (the same keys as /.well-known/jwks.json)."""
    return [
        LicenseKeyOut.model_validate(k) for k in service.public_keys(session, keyring, settings)
    ]


@router.get(
    "/entitlements/{entitlement_id}/license",
    response_model=LicenseOut,
    tags=["licenses"],
    dependencies=[NO_STORE],
)
@writes_on_read
def entitlement_license(
    entitlement_id: uuid.UUID,
    account: CurrentAccount,
    session: DbSession,
    keyring: Keyring,
    settings: SettingsDep,
) -> LicenseOut:
    """The entitlement's current license document, issued on first request and re-issued
    when its terms change (older documents stay valid until their own expiry)."""
    entitlement = entitlements.get_visible_entitlement(session, entitlement_id, account)
    return license_out(service.current_license(session, keyring, settings, entitlement))


@router.get(
    "/entitlements/{entitlement_id}/license.lic",
    tags=["licenses"],
    response_class=Response,
    responses={200: {"content": {"application/x-store-license": {}}}},
    dependencies=[NO_STORE],
)
@writes_on_read
def entitlement_license_file(
    entitlement_id: uuid.UUID,
    account: CurrentAccount,
    session: DbSession,
    keyring: Keyring,
    settings: SettingsDep,
) -> Response:
    """The current license as a .lic file: a readable header, then the signed token."""
    entitlement = entitlements.get_visible_entitlement(session, entitlement_id, account)
    document = service.current_license(session, keyring, settings, entitlement)
    return lic_response(*service.license_file(document))
