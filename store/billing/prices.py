"""Tier prices at the gateway: kept in step with tiers, never mutated (history)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing.gateway import GatewayError
from store.billing.models import TierPrice
from store.billing.pricing import BillingKind
from store.billing.runtime import Billing
from store.catalog.models import Tier
from store.db import utcnow

log = logging.getLogger("store.billing")


def current_price(session: Session, tier: Tier, gateway: str) -> TierPrice | None:
    """The newest recorded price of the tier at this gateway, if it matches the tier now."""
    price = session.scalar(
        select(TierPrice)
        .where(TierPrice.tier_id == tier.id, TierPrice.gateway == gateway)
        .order_by(TierPrice.created_at.desc())
        .limit(1)
    )
    if price is None:
        return None
    if (price.billing, price.amount_minor, price.currency) != (
        tier.billing,
        tier.amount_minor,
        tier.currency,
    ):
        return None
    if tier.recurring and price.gateway_ref is None:
        return None
    return price


def ensure_price(session: Session, billing: Billing, tier: Tier) -> TierPrice:
    """The tier's current price at the gateway, created (with a new history row) when the
    tier's amount, currency or billing period changed since the last one."""
    if tier.is_free:
        raise ValueError("free tiers have no price")
    gateway = billing.gateway
    price = current_price(session, tier, gateway.name)
    if price is not None:
        if tier.gateway_price_ref != price.gateway_ref and price.gateway_ref is not None:
            tier.gateway_price_ref = price.gateway_ref
        return price
    price = TierPrice(
        tier_id=tier.id,
        billing=tier.billing,
        amount_minor=tier.amount_minor,
        currency=tier.currency,
        gateway=gateway.name,
        created_at=utcnow(),
    )
    price.gateway_ref = gateway.sync_price(session, tier=tier, price=price)
    session.add(price)
    if price.gateway_ref is not None:
        tier.gateway_price_ref = price.gateway_ref
    session.flush()
    return price


def sync_all(session: Session, billing: Billing) -> list[TierPrice]:
    """``store billing sync``: every active paid tier has its current price at the gateway."""
    tiers = session.scalars(
        select(Tier)
        .where(Tier.active.is_(True), Tier.billing != BillingKind.FREE)
        .order_by(Tier.created_at)
    )
    return [ensure_price(session, billing, tier) for tier in tiers]


def sync_missing(
    session: Session, billing: Billing, *, product_id: uuid.UUID | None = None, limit: int = 50
) -> int:
    """Make the gateway price of each active recurring tier (of one product, or all) that has
    none yet: a tier made or repriced since, as catalog edits never call the gateway. Run
    after a catalog edit commits and by every sweep; one that fails is left for the next.
    Returns how many were made."""
    recurring = [kind for kind in BillingKind if kind.recurring]
    query = select(Tier).where(
        Tier.active.is_(True), Tier.billing.in_(recurring), Tier.gateway_price_ref.is_(None)
    )
    if product_id is not None:
        query = query.where(Tier.product_id == product_id)
    tiers = session.scalars(query.order_by(Tier.created_at).limit(limit)).all()
    made = 0
    for tier in tiers:
        try:
            with session.begin_nested():
                made += ensure_price(session, billing, tier).gateway_ref is not None
        except GatewayError as exc:
            log.warning("tier %s: no gateway price yet (%s); retried", tier.id, exc)
    return made


def price_history(session: Session, tier: Tier) -> list[TierPrice]:
    return list(
        session.scalars(
            select(TierPrice).where(TierPrice.tier_id == tier.id).order_by(TierPrice.created_at)
        )
    )
