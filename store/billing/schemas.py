"""JSON shapes of the billing API (fields are only ever added)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    status: str
    product_id: uuid.UUID
    tier_id: uuid.UUID
    subscription_id: uuid.UUID | None
    amount_minor: int
    tax_minor: int
    total_minor: int
    discount_minor: int = Field(description="Taken off by a coupon (amount_minor is after it)")
    coupon_code: str | None
    quantity: int
    currency: str
    refunded_minor: int
    gateway: str
    failure_reason: str
    entitlement_id: uuid.UUID | None
    receipt_number: str | None
    created_at: datetime
    paid_at: datetime | None
    refunded_at: datetime | None
    disputed_at: datetime | None


class CardIn(BaseModel):
    payment_method: str | None = Field(
        default=None, max_length=255, description="Stripe: a PaymentMethod id from Stripe.js"
    )
    card_number: str | None = Field(
        default=None, max_length=32, description="Test gateway: one of the test card numbers"
    )


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: str
    product_id: uuid.UUID
    tier_id: uuid.UUID
    amount_minor: int = Field(description="The next charge before tax (after any discount)")
    tax_minor: int = Field(description="The next charge's tax")
    discount_minor: int = Field(description="The next charge's coupon discount")
    coupon_code: str | None
    quantity: int
    currency: str
    interval: str
    gateway: str
    current_period_end: datetime | None
    cancel_at_period_end: bool
    trial_end: datetime | None
    canceled_at: datetime | None
    entitlement_id: uuid.UUID | None
    created_at: datetime
    credit_net_minor: int = Field(
        default=0, description="Credit from a plan change taken off the next charges (net)"
    )
    credit_tax_minor: int = Field(default=0, description="The tax part of that credit")
    card_confirmation_pending: bool = Field(
        default=False,
        description="A new card waits for the bank's confirmation (3-D Secure); the old "
        "card is used until it is confirmed",
    )
    next_action: str | None = Field(
        default=None,
        description="authenticate: confirm the new card (Stripe.js with client_secret, then "
        "POST .../card/confirm)",
    )
    client_secret: str | None = Field(
        default=None, description="Stripe: the SetupIntent's client secret for Stripe.js"
    )


class CardConfirmIn(BaseModel):
    approve: bool | None = Field(
        default=None,
        description="Test gateway only: the simulated bank's answer (Stripe: omit; the "
        "SetupIntent's state decides)",
    )


class PlanChangeIn(CardIn):
    tier_id: uuid.UUID = Field(description="Another monthly or yearly tier of the same product")
    key: str | None = Field(
        default=None,
        max_length=80,
        description="Idempotency key (or the Idempotency-Key header): the same key answers "
        "the first change instead of changing again",
    )


class ProrationOut(BaseModel):
    """What changing to ``tier_id`` now costs (all amounts in the currency's minor unit)."""

    tier_id: uuid.UUID
    tier_name: str
    billing: str
    currency: str
    interval_change: bool
    unused_fraction: str = Field(description="Share of the current period not yet used")
    credit_net_minor: int
    credit_tax_minor: int
    charge_net_minor: int
    charge_tax_minor: int
    due_now_net_minor: int
    due_now_tax_minor: int
    due_now_minor: int
    carried_minor: int = Field(description="Credit left over for the next charges")
    period_end: datetime = Field(description="End of the period after the change")
    renews_at_minor: int = Field(description="Each later charge on the new plan, tax included")


class PlanChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    subscription_id: uuid.UUID
    key: str
    status: str = Field(description="applied | failed (the old plan stays) | pending")
    from_tier_id: uuid.UUID
    to_tier_id: uuid.UUID
    currency: str
    credit_net_minor: int
    credit_tax_minor: int
    charge_net_minor: int
    charge_tax_minor: int
    due_net_minor: int
    due_tax_minor: int
    carried_net_minor: int
    carried_tax_minor: int
    interval_change: bool
    changed_at: datetime
    period_end: datetime
    order_id: uuid.UUID | None
    failure_reason: str
    failure_code: str | None
    applied_at: datetime | None


class CheckoutIn(BaseModel):
    tier_id: uuid.UUID
    payment_method: str | None = Field(
        default=None, max_length=255, description="Stripe: a PaymentMethod id from Stripe.js"
    )
    card_number: str | None = Field(
        default=None, max_length=32, description="Test gateway: one of the test card numbers"
    )
    org: str | None = Field(default=None, description="Buy for this organization (owners)")
    country: str | None = Field(
        default=None, max_length=2, description="Buyer's ISO 3166 country (sets the tax rate)"
    )
    vat_id: str | None = Field(
        default=None, max_length=32, description="Business buyers: EU VAT id (reverse charge)"
    )
    coupon: str | None = Field(
        default=None, max_length=64, description="A coupon code of the product (publisher's)"
    )
    quantity: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Units of a tier with a seat limit (each unit is the tier's seats)",
    )
    expected_total_minor: int | None = Field(
        default=None,
        ge=0,
        description="The quote's total_minor the buyer was shown; with expected_due_now_minor, "
        "a price that differs now answers 409 price_changed and nothing is charged",
    )
    expected_due_now_minor: int | None = Field(
        default=None, ge=0, description="The quote's due_now_minor the buyer was shown"
    )


class CheckoutOut(BaseModel):
    order: OrderOut
    next_action: str | None = Field(
        default=None, description="authenticate: finish authentication (client_secret / page)"
    )
    client_secret: str | None = None
    message: str = ""


class RefundIn(BaseModel):
    amount_minor: int | None = Field(
        default=None, ge=1, description="Minor units; omit for everything not yet refunded"
    )


class SalesRowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    month: str
    product: str
    tier: str
    currency: str
    orders: int
    gross_minor: int = Field(description="Paid by buyers in the month, tax included")
    tax_minor: int
    refunded_minor: int = Field(description="Refunded in the month, tax included")
    refunded_net_minor: int
    refunded_tax_minor: int
    net_minor: int = Field(description="gross - tax - refunded net")
    discount_minor: int = Field(default=0, description="Taken off by coupons (not in gross)")


class QuoteOut(BaseModel):
    """What a buyer pays for a tier (``store.billing.pricing.quote``)."""

    model_config = ConfigDict(from_attributes=True)

    tier_id: uuid.UUID
    billing: str = Field(description="free | one_time | month | year")
    currency: str
    quantity: int
    unit_amount_minor: int
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int = Field(description="Per charge: net + tax")
    tax_rate: str = Field(description="Percent, e.g. 19 or 8.875")
    tax_label: str
    reverse_charge: bool
    coupon_code: str | None = Field(default=None, description="The coupon applied")
    coupon_terms: str | None = Field(default=None, description="e.g. 25% off for 3 months")
    interval: str | None = Field(description="month | year for subscriptions")
    trial_days: int
    trial_end: datetime | None
    first_charge_at: datetime = Field(description="When the total is first charged")
    due_now_minor: int = Field(description="Charged at checkout (0 during a trial)")


class CouponIn(BaseModel):
    code: str = Field(max_length=64, description="3-40 letters, digits, - and _ (upper-cased)")
    product: str = Field(max_length=255, description="The product's repository")
    tier: str | None = Field(default=None, max_length=64, description="Only this tier (slug)")
    percent_off: str | None = Field(default=None, max_length=12, description="e.g. 25 or 12.5")
    amount_off: str | None = Field(
        default=None, max_length=24, description="e.g. 10.00, in the tier's currency"
    )
    currency: str | None = Field(default=None, max_length=3)
    duration: str = Field(default="once", description="once | repeating | forever")
    duration_months: int | None = Field(default=None, description="For repeating")
    max_redemptions: int | None = Field(default=None, description="None: no limit")
    once_per_customer: bool = False
    expires_at: datetime | None = None


class CouponOut(BaseModel):
    id: uuid.UUID
    code: str
    product: str
    tier: str | None
    percent_off: str | None
    amount_off_minor: int | None
    currency: str | None
    duration: str
    duration_months: int | None
    max_redemptions: int | None
    times_redeemed: int
    once_per_customer: bool
    expires_at: datetime | None
    active: bool
    state: str = Field(description="active | expired | used up | inactive")
    terms: str = Field(description="e.g. 25% off for 3 months")
    created_at: datetime
