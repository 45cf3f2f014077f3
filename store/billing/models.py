"""Orders, subscriptions, gateway customers and the price history of tiers.

Money is an integer amount of the currency's minor unit plus an ISO 4217 code (lowercase).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false as sa_false

from store.accounts.models import Account, Organization
from store.catalog.models import Product, Tier
from store.catalog.periods import BillingKind, BillingKindType, Interval, IntervalType
from store.db import Base, new_id, utcnow

ORDER_STATUSES = (
    "pending",
    "requires_action",
    "failed",
    "paid",
    "partially_refunded",
    "refunded",
)
SUBSCRIPTION_STATUSES = ("incomplete", "trialing", "active", "past_due", "canceled", "expired")
# One open purchase per holder and product (store.billing.ownership): these statuses count.
OPEN_ORDER_SQL = (
    "kind = 'one_time' AND holder_key IS NOT NULL AND status IN "
    "('pending', 'requires_action', 'review', 'paid', 'partially_refunded')"
)
OPEN_SUBSCRIPTION_SQL = (
    "holder_key IS NOT NULL AND status IN ('incomplete', 'trialing', 'active', 'past_due')"
)
# A coupon's redemption counts (and blocks a second one by the same customer) unless released.
LIVE_REDEMPTION_SQL = "customer_key IS NOT NULL AND status IN ('held', 'redeemed')"
COUPON_DURATIONS = ("once", "repeating", "forever")


class BoughtTerms:
    """What a purchase gives, as the tier said when it was bought: seats per unit (None:
    unlimited) and features. A publisher editing the tier later changes what new purchases
    give, never what was bought: fulfilment, renewals and seat changes read these."""

    # None: bought before the terms were recorded (migration 0800); the tier's hold.
    terms: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    if TYPE_CHECKING:
        tier: Mapped[Tier]

    def record_terms(self, tier: Tier) -> None:
        self.terms = {"seats": tier.seats, "features": list(tier.features)}

    @property
    def unit_seats(self) -> int | None:
        if self.terms is None:
            return self.tier.seats
        seats = self.terms.get("seats")
        return int(seats) if seats is not None else None

    @property
    def bought_features(self) -> list[str]:
        if self.terms is None:
            return list(self.tier.features)
        return [str(f) for f in self.terms.get("features") or []]


class TierPrice(Base):
    """One price a tier had at the gateway. Never changed: a new amount makes a new row."""

    __tablename__ = "billing_tier_prices"
    __table_args__ = (Index("ix_billing_tier_prices_tier_created", "tier_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tiers.id", ondelete="CASCADE"))
    billing: Mapped[BillingKind] = mapped_column(BillingKindType())
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    gateway: Mapped[str] = mapped_column(String(16))  # stripe | test
    # The gateway's price (a Stripe Plan id for recurring tiers); None for one-time tiers.
    gateway_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tier: Mapped[Tier] = relationship()


class GatewayCustomer(Base):
    """The gateway's customer for an account (one per account and gateway)."""

    __tablename__ = "billing_gateway_customers"
    __table_args__ = (UniqueConstraint("account_id", "gateway"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    gateway: Mapped[str] = mapped_column(String(16))
    gateway_ref: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subscription(BoughtTerms, Base):
    __tablename__ = "billing_subscriptions"
    __table_args__ = (
        Index(
            "ux_billing_subscriptions_open_holder",
            "holder_key",
            "product_id",
            unique=True,
            sqlite_where=text(OPEN_SUBSCRIPTION_SQL),
            postgresql_where=text(OPEN_SUBSCRIPTION_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), default=None
    )
    tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    product_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("products.id", ondelete="RESTRICT"), index=True
    )
    # The organization bought for, else the buying account (store.billing.ownership).
    holder_key: Mapped[uuid.UUID | None] = mapped_column(default=None)
    tier_price_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_tier_prices.id", ondelete="SET NULL"), default=None
    )
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    interval: Mapped[Interval] = mapped_column(IntervalType())
    # Per period, from the quote: net amount (``amount_minor``, after any discount) and tax.
    tax_minor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The trial the buyer was quoted (0: none); the first charge is at its end.
    trial_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    quantity: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    discount_minor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The rate applied, in percent ("19", "8.875"), and what it was decided from.
    tax_rate: Mapped[str] = mapped_column(String(12), default="0", server_default="0")
    tax_country: Mapped[str | None] = mapped_column(String(2), default=None)
    vat_id: Mapped[str | None] = mapped_column(String(32), default=None)
    reverse_charge: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    status: Mapped[str] = mapped_column(String(16), default="incomplete")
    gateway: Mapped[str] = mapped_column(String(16))
    gateway_ref: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    current_period_end: Mapped[datetime | None] = mapped_column(default=None)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    trial_end: Mapped[datetime | None] = mapped_column(default=None)
    canceled_at: Mapped[datetime | None] = mapped_column(default=None)
    # The store decided billing must stop (see store.billing.access): "now" or "period_end",
    # why (END_REASONS), and when. Kept until the gateway agrees, so the sweep can retry.
    end_requested: Mapped[str | None] = mapped_column(String(16), default=None)
    end_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    end_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    # The customer asked to cancel at period end (lifting the store's decision keeps that).
    canceled_by_customer: Mapped[bool] = mapped_column(default=False)
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("entitlements.id", ondelete="SET NULL"), default=None
    )
    # The gateway time of the newest event applied to the status: older ones never win.
    last_event_at: Mapped[datetime | None] = mapped_column(default=None)
    # The coupon redeemed at checkout (its duration says which charges it covers) and how
    # many charges were paid so far (a trial start is not a charge).
    coupon_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_coupons.id", ondelete="SET NULL"), default=None
    )
    coupon_code: Mapped[str | None] = mapped_column(String(40), default=None)
    paid_charges: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the current period began (a plan change prorates over it).
    current_period_start: Mapped[datetime | None] = mapped_column(default=None)
    # Credit from a plan change to a cheaper plan, taken off the next invoices (net, tax).
    credit_net_minor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    credit_tax_minor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The item quantity the gateway's subscription has, from its newest event (None: never
    # read). Seats follow the lesser of it and the quantity last paid for (``quantity``).
    gateway_quantity: Mapped[int | None] = mapped_column(Integer, default=None)
    # A new card waiting for the bank's confirmation (Stripe: its SetupIntent).
    pending_setup_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    account: Mapped[Account] = relationship()
    organization: Mapped[Organization | None] = relationship()
    tier: Mapped[Tier] = relationship(lazy="joined")
    product: Mapped[Product] = relationship(lazy="joined")
    coupon: Mapped[Coupon | None] = relationship()


class Order(BoughtTerms, Base):
    """One payment: a one-time purchase, or one paid invoice of a subscription."""

    __tablename__ = "billing_orders"
    __table_args__ = (
        UniqueConstraint("gateway", "gateway_ref"),
        Index("ix_billing_orders_product_paid", "product_id", "paid_at"),
        Index(
            "ux_billing_orders_open_holder",
            "holder_key",
            "product_id",
            unique=True,
            sqlite_where=text(OPEN_ORDER_SQL),
            postgresql_where=text(OPEN_ORDER_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="RESTRICT"), index=True
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), default=None
    )
    tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    # The organization bought for, else the buying account (store.billing.ownership).
    holder_key: Mapped[uuid.UUID | None] = mapped_column(default=None)
    tier_price_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_tier_prices.id", ondelete="SET NULL"), default=None
    )
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_subscriptions.id", ondelete="SET NULL"), default=None, index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # one_time | subscription
    # What was charged, copied at purchase time: amount before tax (after any discount), tax,
    # total = both.
    amount_minor: Mapped[int] = mapped_column(Integer)
    tax_minor: Mapped[int] = mapped_column(Integer, default=0)
    quantity: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    discount_minor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The rate applied, in percent ("19", "8.875"), and what it was decided from.
    tax_rate: Mapped[str] = mapped_column(String(12), default="0", server_default="0")
    tax_country: Mapped[str | None] = mapped_column(String(2), default=None)
    vat_id: Mapped[str | None] = mapped_column(String(32), default=None)
    reverse_charge: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    refunded_minor: Mapped[int] = mapped_column(Integer, default=0)
    gateway: Mapped[str] = mapped_column(String(16))
    # The payment (PaymentIntent) for one-time orders, the invoice for subscription orders.
    gateway_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    # The PaymentIntent behind the payment, when known (refunds and disputes name it).
    payment_ref: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    failure_reason: Mapped[str] = mapped_column(String(500), default="")
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("entitlements.id", ondelete="SET NULL"), default=None
    )
    # "<SELLER>-000001": numbered in sequence per selling organization (billing.receipts).
    receipt_number: Mapped[str | None] = mapped_column(String(96), unique=True, default=None)
    # The service period a subscription payment covers (None for one-time purchases).
    period_start: Mapped[datetime | None] = mapped_column(default=None)
    period_end: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(default=None)
    refunded_at: Mapped[datetime | None] = mapped_column(default=None)
    disputed_at: Mapped[datetime | None] = mapped_column(default=None)
    # open | won | lost; None when the payment was never disputed.
    dispute_status: Mapped[str | None] = mapped_column(String(16), default=None)
    # The coupon whose discount this payment got (``discount_minor``), if any.
    coupon_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_coupons.id", ondelete="SET NULL"), default=None
    )
    coupon_code: Mapped[str | None] = mapped_column(String(40), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    account: Mapped[Account] = relationship()
    organization: Mapped[Organization | None] = relationship()
    tier: Mapped[Tier] = relationship(lazy="joined")
    product: Mapped[Product] = relationship(lazy="joined")
    subscription: Mapped[Subscription | None] = relationship()

    @property
    def total_minor(self) -> int:
        return self.amount_minor + self.tax_minor

    @property
    def refundable_minor(self) -> int:
        return max(self.total_minor - self.refunded_minor, 0) if self.paid_at else 0


class TrialClaim(Base):
    """A free trial taken, by a person and by the organization it was for (billing.trials)."""

    __tablename__ = "billing_trial_claims"
    __table_args__ = (
        UniqueConstraint("product_id", "account_id", name="uq_billing_trial_claims_account"),
        UniqueConstraint(
            "product_id", "organization_id", name="uq_billing_trial_claims_organization"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    # Exactly one of account and organization.
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), default=None
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), default=None
    )
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_subscriptions.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GatewayTaxRate(Base):
    """A tax rate made at the gateway (a Stripe TaxRate, exclusive), made once per rate."""

    __tablename__ = "billing_gateway_tax_rates"
    __table_args__ = (UniqueConstraint("gateway", "rate", "label"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    gateway: Mapped[str] = mapped_column(String(16))
    rate: Mapped[str] = mapped_column(String(12))  # percent, as on orders
    label: Mapped[str] = mapped_column(String(50))
    gateway_ref: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Refund(Base):
    """One refund step of an order: its amount, the tax part of it, and when it happened."""

    __tablename__ = "billing_refunds"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("billing_orders.id", ondelete="CASCADE"), index=True
    )
    amount_minor: Mapped[int] = mapped_column(Integer)  # tax included
    tax_minor: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    order: Mapped[Order] = relationship()

    @property
    def net_minor(self) -> int:
        return self.amount_minor - self.tax_minor


class ReceiptSequence(Base):
    """The last receipt number a selling organization gave (billing.receipts)."""

    __tablename__ = "billing_receipt_sequences"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Coupon(Base):
    """A publisher's coupon for one product (or one tier of it), entered as a code at checkout.

    Its terms never change once made (orders and subscriptions point at them); a publisher
    deactivates a coupon and makes a new one. ``times_redeemed`` counts live redemptions and
    only moves by conditional updates (store.billing.coupons), so it never passes
    ``max_redemptions``.
    """

    __tablename__ = "billing_coupons"
    __table_args__ = (UniqueConstraint("product_id", "code"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    # Only this tier of the product; None: every paid tier of it.
    tier_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tiers.id", ondelete="CASCADE"), default=None
    )
    code: Mapped[str] = mapped_column(String(40))  # upper case
    # Percent ("25", "12.5") or an amount of one currency's minor unit: exactly one.
    percent_off: Mapped[str | None] = mapped_column(String(12), default=None)
    amount_off_minor: Mapped[int | None] = mapped_column(Integer, default=None)
    currency: Mapped[str | None] = mapped_column(String(3), default=None)
    duration: Mapped[str] = mapped_column(String(16), default="once")
    duration_months: Mapped[int | None] = mapped_column(Integer, default=None)
    max_redemptions: Mapped[int | None] = mapped_column(Integer, default=None)
    times_redeemed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    once_per_customer: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false()
    )
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deactivated_at: Mapped[datetime | None] = mapped_column(default=None)

    product: Mapped[Product] = relationship(lazy="joined")
    tier: Mapped[Tier | None] = relationship(lazy="joined")


class CouponRedemption(Base):
    """One use of a coupon by a checkout: ``held`` while its payment is open, ``redeemed``
    once paid, ``released`` when the checkout failed or was abandoned (a refund keeps it)."""

    __tablename__ = "billing_coupon_redemptions"
    __table_args__ = (
        Index(
            "ux_billing_coupon_redemptions_customer",
            "coupon_id",
            "customer_key",
            unique=True,
            sqlite_where=text(LIVE_REDEMPTION_SQL),
            postgresql_where=text(LIVE_REDEMPTION_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    coupon_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("billing_coupons.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # The buying account for a once-per-customer coupon (one live redemption each), else None.
    customer_key: Mapped[uuid.UUID | None] = mapped_column(default=None)
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_orders.id", ondelete="SET NULL"), default=None, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="held")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


PLAN_CHANGE_STATUSES = ("pending", "applied", "failed")
PENDING_CHANGE_SQL = "status = 'pending'"


class PlanChange(Base):
    """A customer's change of a subscription to another tier of the same product.

    Priced by ``store.billing.pricing.prorate`` and kept with its amounts. ``key`` makes the
    request idempotent (the same key answers the first change); at most one change of a
    subscription is ``pending`` at a time (a partial unique index), so two requests at the
    same instant change it once. The entitlement follows the new tier only when ``applied``
    (paid, or paid for by the credit); a ``failed`` change left the old plan in place.
    """

    __tablename__ = "billing_plan_changes"
    __table_args__ = (
        UniqueConstraint("subscription_id", "key"),
        Index(
            "ux_billing_plan_changes_pending",
            "subscription_id",
            unique=True,
            sqlite_where=text(PENDING_CHANGE_SQL),
            postgresql_where=text(PENDING_CHANGE_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("billing_subscriptions.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(80))
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    from_tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    to_tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    to_price_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_tier_prices.id", ondelete="SET NULL"), default=None
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    currency: Mapped[str] = mapped_column(String(3))
    credit_net_minor: Mapped[int] = mapped_column(Integer, default=0)
    credit_tax_minor: Mapped[int] = mapped_column(Integer, default=0)
    charge_net_minor: Mapped[int] = mapped_column(Integer, default=0)
    charge_tax_minor: Mapped[int] = mapped_column(Integer, default=0)
    # Due now (the order) and carried to the next invoices; each split in net and tax.
    due_net_minor: Mapped[int] = mapped_column(Integer, default=0)
    due_tax_minor: Mapped[int] = mapped_column(Integer, default=0)
    carried_net_minor: Mapped[int] = mapped_column(Integer, default=0)
    carried_tax_minor: Mapped[int] = mapped_column(Integer, default=0)
    interval_change: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    period_end: Mapped[datetime] = mapped_column()  # of the plan after the change
    # The payment of what is due now, when something is.
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("billing_orders.id", ondelete="SET NULL"), default=None
    )
    failure_reason: Mapped[str] = mapped_column(String(500), default="")
    # The gateway's subscription before the change, when the change started a new one.
    replaced_gateway_ref: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    # Stripe's name of the failure (card_declined, authentication_required, ...).
    failure_code: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(default=None)

    subscription: Mapped[Subscription] = relationship()
    from_tier: Mapped[Tier] = relationship(foreign_keys=[from_tier_id], lazy="joined")
    to_tier: Mapped[Tier] = relationship(foreign_keys=[to_tier_id], lazy="joined")
    order: Mapped[Order | None] = relationship()

    @property
    def due_minor(self) -> int:
        return self.due_net_minor + self.due_tax_minor

    @property
    def carried_minor(self) -> int:
        return self.carried_net_minor + self.carried_tax_minor

    @property
    def credit_minor(self) -> int:
        return self.credit_net_minor + self.credit_tax_minor

    @property
    def charge_minor(self) -> int:
        return self.charge_net_minor + self.charge_tax_minor


# How a seller's owners and finance members hear of sales, each for each organization.
SALE_NOTICE_MODES = ("each", "daily", "none")


class SaleNoticePreference(Base):
    """A member's choice for one selling organization: a mail per sale (the default, also
    when there is no row), one daily digest, or none (billing.sale_notices)."""

    __tablename__ = "billing_sale_notice_preferences"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    mode: Mapped[str] = mapped_column(String(8))
    # When the mode was last changed: a digest tells no sale paid before it (those were
    # mailed alone, or not wanted).
    since: Mapped[datetime] = mapped_column(default=utcnow)


class SaleNotice(Base):
    """A sale told to one person: mailed alone (``digest_day`` None) or in the digest of a
    day. One row per sale and person, so no sale is told twice, however the mails race."""

    __tablename__ = "billing_sale_notices"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("billing_orders.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    digest_day: Mapped[str | None] = mapped_column(String(10), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
