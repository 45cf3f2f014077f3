"""Tier prices at the gateway: kept in step with tiers, never mutated (history)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing.models import TierPrice
from store.billing.pricing import BillingKind
from store.billing.runtime import Billing
from store.catalog.models import Tier
from store.db import utcnow


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


def price_history(session: Session, tier: Tier) -> list[TierPrice]:
    return list(
        session.scalars(
            select(TierPrice).where(TierPrice.tier_id == tier.id).order_by(TierPrice.created_at)
        )
    )
