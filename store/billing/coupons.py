"""Coupons: publishers make them for their products; buyers enter their codes at checkout.

A coupon becomes ``CouponTerms`` for :func:`store.billing.pricing.quote`, so what a checkout
shows, what the gateway charges and what the receipt says come from the same numbers.

Redemptions are counted by conditional updates that the database applies one at a time:
``times_redeemed`` goes up only while it is below ``max_redemptions`` (two checkouts racing
for the last one: exactly one gets it, on PostgreSQL and on SQLite), and a once-per-customer
coupon has at most one live redemption per account (a partial unique index). A checkout that
fails or is abandoned releases its redemption; a refund does not (the coupon was used).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.audit import service as audit
from store.billing.models import COUPON_DURATIONS, Coupon, CouponRedemption, Order, Subscription
from store.billing.pricing import MAX_QUANTITY, CouponTerms, Interval, Priced, Quote, TaxTable
from store.billing.pricing import quote as price_quote
from store.catalog.models import Product, Tier
from store.catalog.money import format_money
from store.db import utcnow
from store.errors import Conflict, NotFound, ValidationFailed

log = logging.getLogger("store.billing")

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,39}$")
MAX_MONTHS = 120


# --- the terms ------------------------------------------------------------------------------


def normalize_code(raw: str | None) -> str:
    """``" launch-25 "`` → ``"LAUNCH-25"``: 3 to 40 letters, digits, ``-`` and ``_``."""
    code = (raw or "").strip().upper()
    if not _CODE.match(code):
        raise ValidationFailed(
            "A coupon code has 3 to 40 letters, digits, - and _ (it starts with a letter or digit)",
            code="bad_coupon_code",
            field="code",
        )
    return code


def terms(coupon: Coupon) -> CouponTerms:
    return CouponTerms(
        code=coupon.code,
        percent_off=Decimal(coupon.percent_off) if coupon.percent_off is not None else None,
        amount_off_minor=coupon.amount_off_minor,
        currency=coupon.currency,
        duration=coupon.duration,
        duration_months=coupon.duration_months,
    )


def describe(coupon: Coupon) -> str:
    """``25% off for 3 months``, ``$10.00 off once``, ``50% off forever``."""
    if coupon.percent_off is not None:
        off = f"{coupon.percent_off}% off"
    else:
        off = f"{format_money(coupon.amount_off_minor or 0, coupon.currency or 'usd')} off"
    if coupon.duration == "repeating":
        months = coupon.duration_months or 1
        return f"{off} for {months} month{'s' if months != 1 else ''}"
    if coupon.duration == "forever":
        return f"{off} forever"
    return f"{off} once"


def state(coupon: Coupon, now: datetime | None = None) -> str:
    """active | expired | used up | inactive."""
    now = now or utcnow()
    if not coupon.active:
        return "inactive"
    if coupon.expires_at is not None and coupon.expires_at <= now:
        return "expired"
    if coupon.max_redemptions is not None and coupon.times_redeemed >= coupon.max_redemptions:
        return "used up"
    return "active"


# --- publishers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponSpec:
    """What a publisher asks for; :func:`create` checks every field."""

    code: str
    product: str  # repository
    tier: str | None = None  # slug
    percent_off: str | None = None
    amount_off: str | None = None  # in the tier's currency, e.g. "10" or "9.99"
    currency: str | None = None  # for amount_off; default: the product's tiers' currency
    duration: str = "once"
    duration_months: int | None = None
    max_redemptions: int | None = None
    once_per_customer: bool = False
    expires_at: datetime | None = None


def _parse_percent(value: str) -> str:
    try:
        percent = Decimal(value.strip())
    except InvalidOperation:
        raise ValidationFailed(
            f"Percent off {value!r} is not a number", code="bad_coupon_percent", field="percent_off"
        ) from None
    if (
        not percent.is_finite()
        or not 0 < percent <= 100
        or percent != percent.quantize(Decimal("0.01"))
    ):
        raise ValidationFailed(
            "Percent off must be more than 0 and at most 100, with at most 2 decimals",
            code="bad_coupon_percent",
            field="percent_off",
        )
    return format(percent.normalize(), "f")


def _parse_amount(value: str, currency: str) -> int:
    from store.catalog.money import parse_amount

    minor = parse_amount(
        value, currency, what="Amount off", code="bad_coupon_amount", field="amount_off"
    )
    if not minor:
        raise ValidationFailed(
            "Amount off must be more than 0", code="bad_coupon_amount", field="amount_off"
        )
    return minor


def _product_of(session: Session, org: Organization, repository: str) -> Product:
    product = session.scalar(
        select(Product).where(
            Product.repository == repository.strip().lower(),
            Product.organization_id == org.id,
        )
    )
    if product is None:
        raise NotFound(f"'{org.slug}' has no product {repository}", field="product")
    return product


def create(session: Session, *, actor: Account, org: Organization, spec: CouponSpec) -> Coupon:
    """A new coupon of one of the organization's products (owners)."""
    accounts.require_role(session, actor, org, "owner")
    code = normalize_code(spec.code)
    product = _product_of(session, org, spec.product)
    paid = [t for t in product.tiers if not t.is_free]
    tier: Tier | None = None
    if spec.tier:
        tier = next((t for t in paid if t.slug == spec.tier.strip().lower()), None)
        if tier is None:
            raise NotFound(f"{product.repository} has no paid tier '{spec.tier}'", field="tier")
    elif not paid:
        raise ValidationFailed(
            f"{product.repository} has no paid tier to discount",
            code="coupon_no_paid_tier",
            field="product",
        )
    percent = (spec.percent_off or "").strip() or None
    amount = (spec.amount_off or "").strip() or None
    if (percent is None) == (amount is None):
        raise ValidationFailed(
            "Give either a percent off or an amount off",
            code="coupon_percent_or_amount",
            field=("percent_off", "amount_off"),
        )
    percent_off = _parse_percent(percent) if percent is not None else None
    amount_off_minor = None
    currency = None
    if amount is not None:
        currencies = {t.currency.lower() for t in ([tier] if tier else paid)}
        currency = (spec.currency or "").strip().lower() or None
        if currency is None:
            if len(currencies) != 1:
                raise ValidationFailed(
                    "The tiers have several currencies: give the amount's currency",
                    code="coupon_currency",
                    field=("currency", "amount_off"),
                )
            currency = currencies.pop()
        elif currency not in currencies:
            raise ValidationFailed(
                f"No tier this coupon is for is priced in {currency.upper()}",
                code="coupon_currency",
                field=("currency", "amount_off"),
            )
        amount_off_minor = _parse_amount(amount, currency)
    if spec.duration not in COUPON_DURATIONS:
        raise ValidationFailed(
            f"Duration must be one of {', '.join(COUPON_DURATIONS)}",
            code="bad_coupon_duration",
            field="duration",
        )
    months = None
    if spec.duration == "repeating":
        if spec.duration_months is None or not 1 <= spec.duration_months <= MAX_MONTHS:
            raise ValidationFailed(
                f"A repeating coupon needs a number of months from 1 to {MAX_MONTHS}",
                code="bad_coupon_duration",
                field="duration_months",
            )
        months = spec.duration_months
    elif spec.duration_months is not None:
        raise ValidationFailed(
            "Months are only for a repeating coupon",
            code="bad_coupon_duration",
            field="duration_months",
        )
    if spec.max_redemptions is not None and not 1 <= spec.max_redemptions <= MAX_QUANTITY:
        raise ValidationFailed(
            f"Max redemptions must be from 1 to {MAX_QUANTITY}",
            code="bad_coupon_limit",
            field="max_redemptions",
        )
    if spec.expires_at is not None and spec.expires_at <= utcnow():
        raise ValidationFailed(
            "The expiry must be in the future", code="bad_coupon_expiry", field="expires_at"
        )
    coupon = Coupon(
        organization_id=org.id,
        product_id=product.id,
        tier_id=tier.id if tier else None,
        code=code,
        percent_off=percent_off,
        amount_off_minor=amount_off_minor,
        currency=currency,
        duration=spec.duration,
        duration_months=months,
        max_redemptions=spec.max_redemptions,
        once_per_customer=spec.once_per_customer,
        expires_at=spec.expires_at,
        created_by_id=actor.id,
    )
    try:
        with session.begin_nested():
            session.add(coupon)
            session.flush()
    except IntegrityError:
        raise Conflict(
            f"{product.repository} already has a coupon {code}", code="coupon_exists", field="code"
        ) from None
    audit.record(
        session,
        action="coupon.create",
        actor=actor,
        target=coupon,
        org=org.id,
        details={"code": code, "product": product.repository, "terms": describe(coupon)},
    )
    return coupon


def coupons_of(session: Session, *, actor: Account, org: Organization) -> list[Coupon]:
    """The organization's coupons, newest first (owners and the finance role)."""
    accounts.require_revenue(session, actor, org)
    return list(
        session.scalars(
            select(Coupon)
            .where(Coupon.organization_id == org.id)
            .order_by(Coupon.created_at.desc(), Coupon.code)
        )
    )


def deactivate(
    session: Session, *, actor: Account, org: Organization, coupon_id: uuid.UUID
) -> Coupon:
    """No new checkout may use it; subscriptions that have it keep their discount."""
    accounts.require_role(session, actor, org, "owner")
    coupon = session.get(Coupon, coupon_id)
    if coupon is None or coupon.organization_id != org.id:
        raise NotFound("No such coupon")
    if coupon.active:
        coupon.active = False
        coupon.deactivated_at = utcnow()
        session.flush()
        audit.record(
            session,
            action="coupon.deactivate",
            actor=actor,
            target=coupon,
            org=org.id,
            details={"code": coupon.code},
        )
    return coupon


# --- checkout --------------------------------------------------------------------------------


def for_checkout(
    session: Session,
    *,
    code: str,
    tier: Tier,
    account: Account | None,
    now: datetime | None = None,
) -> Coupon:
    """The coupon a buyer entered for ``tier``, if it may be used now; a clear error if not.
    (Without an account, as for a price quote, the once-per-customer rule is not checked.)"""
    now = now or utcnow()
    try:
        normalized = normalize_code(code)
    except ValidationFailed:
        raise ValidationFailed(
            f"There is no coupon {code.strip()!r} for this product",
            code="coupon_not_found",
            field="coupon",
        ) from None
    coupon = session.scalar(
        select(Coupon).where(Coupon.product_id == tier.product_id, Coupon.code == normalized)
    )
    if coupon is None:
        raise ValidationFailed(
            f"There is no coupon {normalized} for this product",
            code="coupon_not_found",
            field="coupon",
        )
    if not coupon.active:
        raise ValidationFailed(
            f"Coupon {normalized} is no longer valid", code="coupon_inactive", field="coupon"
        )
    if coupon.expires_at is not None and coupon.expires_at <= now:
        raise ValidationFailed(
            f"Coupon {normalized} has expired", code="coupon_expired", field="coupon"
        )
    if coupon.tier_id is not None and coupon.tier_id != tier.id:
        name = coupon.tier.name if coupon.tier is not None else "another tier"
        raise ValidationFailed(
            f"Coupon {normalized} is only for the {name} tier",
            code="coupon_not_for_tier",
            field="coupon",
        )
    if coupon.amount_off_minor is not None and (coupon.currency or "") != tier.currency.lower():
        raise ValidationFailed(
            f"Coupon {normalized} is for {str(coupon.currency).upper()} prices",
            code="coupon_currency",
            field="coupon",
        )
    if coupon.max_redemptions is not None and coupon.times_redeemed >= coupon.max_redemptions:
        raise ValidationFailed(
            f"Coupon {normalized} has been used up", code="coupon_used_up", field="coupon"
        )
    if (
        account is not None
        and coupon.once_per_customer
        and _live_redemption(session, coupon, account) is not None
    ):
        raise ValidationFailed(
            f"You have used coupon {normalized} already", code="coupon_already_used", field="coupon"
        )
    return coupon


def _live_redemption(session: Session, coupon: Coupon, account: Account) -> CouponRedemption | None:
    return session.scalar(
        select(CouponRedemption).where(
            CouponRedemption.coupon_id == coupon.id,
            CouponRedemption.account_id == account.id,
            CouponRedemption.status.in_(("held", "redeemed")),
        )
    )


def claim(session: Session, *, coupon: Coupon, account: Account) -> CouponRedemption:
    """Take one redemption of the coupon for a checkout (see the module docstring).

    The count goes up by a conditional update: two checkouts racing for the last redemption
    both run it, the database applies them one after the other, and the second finds the
    limit reached (PostgreSQL re-checks the condition on the row the first one committed).
    """
    now = utcnow()
    limit_ok = (Coupon.max_redemptions.is_(None)) | (Coupon.times_redeemed < Coupon.max_redemptions)
    taken = session.execute(
        update(Coupon)
        .where(
            Coupon.id == coupon.id,
            Coupon.active.is_(True),
            (Coupon.expires_at.is_(None)) | (Coupon.expires_at > now),
            limit_ok,
        )
        .values(times_redeemed=Coupon.times_redeemed + 1)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(coupon)
        if not coupon.active or (coupon.expires_at is not None and coupon.expires_at <= now):
            raise ValidationFailed(
                f"Coupon {coupon.code} is no longer valid", code="coupon_inactive", field="coupon"
            )
        raise ValidationFailed(
            f"Coupon {coupon.code} has been used up", code="coupon_used_up", field="coupon"
        )
    redemption = CouponRedemption(
        coupon_id=coupon.id,
        account_id=account.id,
        customer_key=account.id if coupon.once_per_customer else None,
        status="held",
    )
    try:
        with session.begin_nested():
            session.add(redemption)
            session.flush()
    except IntegrityError:
        # Another checkout of this customer holds it (once per customer): give the count back.
        _give_back(session, coupon.id)
        raise ValidationFailed(
            f"You have used coupon {coupon.code} already",
            code="coupon_already_used",
            field="coupon",
        ) from None
    session.refresh(coupon)
    return redemption


def _give_back(session: Session, coupon_id: uuid.UUID) -> None:
    session.execute(
        update(Coupon)
        .where(Coupon.id == coupon_id, Coupon.times_redeemed > 0)
        .values(times_redeemed=Coupon.times_redeemed - 1)
        .execution_options(synchronize_session=False)
    )


def _redemption_of(session: Session, order: Order) -> CouponRedemption | None:
    if order.coupon_id is None:
        return None
    return session.scalar(
        select(CouponRedemption)
        .where(CouponRedemption.order_id == order.id)
        .with_for_update(of=CouponRedemption)
        .execution_options(populate_existing=True)
    )


def release(session: Session, order: Order) -> bool:
    """The checkout failed or was abandoned: its redemption counts no more. Only a held
    redemption is released (a paid one stays used, whatever happens after: refunds too)."""
    redemption = _redemption_of(session, order)
    if redemption is None:
        return False
    done = session.execute(
        update(CouponRedemption)
        .where(CouponRedemption.id == redemption.id, CouponRedemption.status == "held")
        .values(status="released", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _give_back(session, redemption.coupon_id)
    session.flush()
    return True


def confirm(session: Session, order: Order) -> None:
    """The checkout's payment arrived: its redemption is used for good. A payment that
    arrives after its checkout was given up (released) takes the redemption back: it was
    charged at the discount, so it counts even past the limit (logged)."""
    redemption = _redemption_of(session, order)
    if redemption is None or redemption.status == "redeemed":
        return
    if redemption.status == "released":
        log.warning("order %s paid after its coupon was released; counted again", order.id)
        session.execute(
            update(Coupon)
            .where(Coupon.id == redemption.coupon_id)
            .values(times_redeemed=Coupon.times_redeemed + 1)
            .execution_options(synchronize_session=False)
        )
        redemption.customer_key = None  # never blocks on the once-per-customer index
    redemption.status = "redeemed"
    session.flush()


# --- charges of a subscription ---------------------------------------------------------------


@dataclass(frozen=True)
class _RenewalPrice:
    """The price a subscription renews at (its tier price when it was bought)."""

    billing: str
    amount_minor: int
    currency: str
    trial_days: int = 0


def charge_quote(
    sub: Subscription,
    *,
    charge_index: int,
    tax_label: str,
    when: datetime | None = None,
    quantity: int | None = None,
) -> Quote:
    """What the subscription's charge numbered ``charge_index`` (0: the first) costs: the
    same quote as at checkout, at the rate recorded then, with the coupon only while its
    duration covers that charge (and, for a coupon of one tier, while that is the plan);
    for ``quantity`` units (default: the subscription's)."""
    interval = Interval(sub.interval)
    price: Priced = _RenewalPrice(
        billing=interval.value,
        amount_minor=sub.tier.amount_minor if sub.tier_price_id is None else _unit(sub),
        currency=sub.currency,
    )
    coupon = terms(sub.coupon) if sub.coupon is not None else None
    if sub.coupon is not None and sub.coupon.tier_id not in (None, sub.tier_id):
        coupon = None  # a coupon for one tier stops when the plan changed to another
    if coupon is not None and not coupon.covers(charge_index, interval):
        coupon = None
    taxes = TaxTable(default_rate=Decimal(sub.tax_rate or "0"), label=tax_label)
    from store.billing.pricing import Buyer

    units = sub.quantity if quantity is None else quantity
    return price_quote(price, Buyer(trial_eligible=False), coupon, units, when, taxes=taxes)


def _unit(sub: Subscription) -> int:
    from store.billing.models import TierPrice

    session = Session.object_session(sub)
    assert session is not None
    price = session.get(TierPrice, sub.tier_price_id)
    return price.amount_minor if price is not None else sub.tier.amount_minor


def next_charge(sub: Subscription, *, tax_label: str, when: datetime | None = None) -> Quote:
    """The subscription's next charge (the one after ``paid_charges`` charges)."""
    return charge_quote(sub, charge_index=sub.paid_charges, tax_label=tax_label, when=when)


def set_next_charge(sub: Subscription, *, tax_label: str) -> Quote:
    """Record the next charge's amounts on the subscription (what pages say it renews at)."""
    q = next_charge(sub, tax_label=tax_label)
    sub.amount_minor, sub.tax_minor, sub.discount_minor = q.net_minor, q.tax_minor, q.discount_minor
    return q
