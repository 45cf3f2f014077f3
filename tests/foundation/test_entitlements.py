"""Entitlements: free "Get", grants, revocation, organization holdings and access decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.db import utcnow
from store.errors import Forbidden, NotFound, PaymentRequired, ValidationFailed
from store.licensing import entitlements
from store.registry.explain import access_for
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier


@pytest.fixture
def shop(session: Session) -> dict[str, object]:
    owner = make_account(session, "pub-owner")
    org = make_org(session, owner, "acme")
    product = make_product(
        session, org, owner, "app", tiers=[{"slug": "free", "billing": "free"}, paid_tier("pro")]
    )
    return {"owner": owner, "org": org, "product": product}


def test_get_free_tier_is_immediate_and_idempotent(session: Session, shop: dict) -> None:
    customer = make_account(session)
    free = catalog.get_tier_by_slug(session, shop["product"], "free")
    first = entitlements.get_free_tier(session, account=customer, tier=free)
    assert first.status == "active" and first.source == "free" and first.ends_at is None
    assert entitlements.get_free_tier(session, account=customer, tier=free).id == first.id
    assert access_for(session, customer, shop["product"]).allowed


def test_paid_tier_cannot_be_got_for_free(session: Session, shop: dict) -> None:
    customer = make_account(session)
    pro = catalog.get_tier_by_slug(session, shop["product"], "pro")
    with pytest.raises(PaymentRequired):
        entitlements.get_free_tier(session, account=customer, tier=pro)


def test_unpublished_tier_cannot_be_got(session: Session, shop: dict) -> None:
    customer = make_account(session)
    draft = make_product(session, shop["org"], shop["owner"], publish=False)
    with pytest.raises(NotFound):
        entitlements.get_free_tier(session, account=customer, tier=draft.tiers[0])


def test_grant_and_revoke_by_publisher_owner_and_admin(session: Session, shop: dict) -> None:
    customer = make_account(session)
    stranger = make_account(session)
    admin = make_admin(session)
    pro = catalog.get_tier_by_slug(session, shop["product"], "pro")
    with pytest.raises(Forbidden):
        entitlements.grant(session, actor=stranger, tier=pro, account=customer)
    held = entitlements.grant(
        session, actor=shop["owner"], tier=pro, account=customer, reason="partner"
    )
    assert held.source == "grant" and held.granted_by_id == shop["owner"].id
    with pytest.raises(ValidationFailed, match="Reason"):
        entitlements.revoke(session, entitlement=held, actor=admin, reason=" ")
    entitlements.revoke(session, entitlement=held, actor=admin, reason="contract ended")
    assert held.status == "revoked" and held.revoked_at is not None
    decision = access_for(session, customer, shop["product"])
    assert not decision.allowed and decision.reason == "revoked"


def test_grant_needs_exactly_one_holder(session: Session, shop: dict) -> None:
    pro = catalog.get_tier_by_slug(session, shop["product"], "pro")
    with pytest.raises(ValidationFailed, match="exactly one"):
        entitlements.grant(session, actor=shop["owner"], tier=pro)


def test_organization_entitlement_covers_its_members(session: Session, shop: dict) -> None:
    buyer_owner = make_account(session)
    member = make_account(session)
    outsider = make_account(session)
    buyer = make_org(session, buyer_owner, "buyer")
    invitation = accounts.invite_member(
        session,
        org=buyer,
        actor=buyer_owner,
        username=member.username,
        role="viewer",
        settings=None,
    )
    accounts.answer_invitation(session, invitation_id=invitation.id, account=member, accept=True)
    pro = catalog.get_tier_by_slug(session, shop["product"], "pro")
    held = entitlements.grant(session, actor=shop["owner"], tier=pro, org=buyer)
    assert access_for(session, member, shop["product"]).entitlement is held
    assert held in entitlements.entitlements_of(session, member)
    assert not access_for(session, outsider, shop["product"]).allowed


def test_expiry_and_grace(session: Session, shop: dict) -> None:
    customer = make_account(session)
    pro = catalog.get_tier_by_slug(session, shop["product"], "pro")
    held = entitlements.grant(
        session,
        actor=shop["owner"],
        tier=pro,
        account=customer,
        ends_at=utcnow() + timedelta(days=30),
    )
    now = utcnow()
    assert held.effective_status(now) == "active"
    entitlements.extend(
        session,
        entitlement=held,
        ends_at=now - timedelta(hours=1),
        grace_until=now + timedelta(days=3),
        signer=None,
    )
    assert held.effective_status(utcnow()) == "grace"
    assert access_for(session, customer, shop["product"]).allowed
    entitlements.extend(session, entitlement=held, ends_at=now - timedelta(hours=1), signer=None)
    decision = access_for(session, customer, shop["product"])
    assert (decision.allowed, decision.reason) == (False, "expired")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("nothing", "no_license"),
        ("suspended_entitlement", "suspended"),
        # Outsiders of a suspended product get the answer an unknown repository gets.
        ("suspended_product", "no_access"),
        ("anonymous", "login_required"),
    ],
)
def test_access_denials_say_why(session: Session, shop: dict, setup: str, reason: str) -> None:
    customer = make_account(session)
    product = shop["product"]
    pro = catalog.get_tier_by_slug(session, product, "pro")
    if setup == "suspended_entitlement":
        held = entitlements.grant(session, actor=shop["owner"], tier=pro, account=customer)
        entitlements.set_status(
            session, entitlement=held, status="suspended", reason="past due", signer=None
        )
    if setup == "suspended_product":
        catalog.set_status(
            session, actor=make_admin(session), product=product, status="suspended", reason="x"
        )
    who = None if setup == "anonymous" else customer
    decision = access_for(session, who, product)
    assert (decision.allowed, decision.reason) == (False, reason)
    assert product.repository in decision.message


def test_publisher_members_and_public_products_always_pull(session: Session, shop: dict) -> None:
    assert access_for(session, shop["owner"], shop["product"]).reason == "publisher"
    # an administrator may pull too, and is not told it is a member of the publisher
    admin = access_for(session, make_admin(session, "other-admin"), shop["product"])
    assert (admin.allowed, admin.reason) == (True, "admin")
    assert "member" not in admin.message
    public = make_product(
        session,
        shop["org"],
        shop["owner"],
        tiers=[{"slug": "f", "billing": "free", "public": True}],
    )
    assert access_for(session, None, public).reason == "public"


def test_visible_entitlement(session: Session, shop: dict) -> None:
    customer = make_account(session)
    stranger = make_account(session)
    free = catalog.get_tier_by_slug(session, shop["product"], "free")
    held = entitlements.get_free_tier(session, account=customer, tier=free)
    assert entitlements.get_visible_entitlement(session, held.id, customer) is held
    assert entitlements.get_visible_entitlement(session, held.id, shop["owner"]) is held
    with pytest.raises(NotFound):
        entitlements.get_visible_entitlement(session, held.id, stranger)
