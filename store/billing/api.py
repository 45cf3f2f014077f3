"""JSON API for billing under /api/v1: checkout, orders, subscriptions, refunds and sales."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from store.accounts import service as accounts
from store.accounts.caller import CurrentAccount
from store.billing import coupons, orders, plan_changes, sales, subscriptions
from store.billing.gateway import Outcome, PaymentInput
from store.billing.pricing import (
    MAX_QUANTITY,
    Buyer,
    normalize_country,
    normalize_vat_id,
    shown_price,
)
from store.billing.runtime import Billing, get_billing
from store.billing.schemas import (
    CardConfirmIn,
    CardIn,
    CheckoutIn,
    CheckoutOut,
    CouponIn,
    CouponOut,
    OrderOut,
    PlanChangeIn,
    PlanChangeOut,
    ProrationOut,
    QuoteOut,
    RefundIn,
    SalesRowOut,
    SubscriptionOut,
)
from store.billing.webhook_api import catch_up
from store.catalog import service as catalog
from store.deps import DbSession
from store.errors import NotFound, PaymentRequired, ServiceUnavailable, StoreError, ValidationFailed

router = APIRouter(prefix="/billing", tags=["billing"])
BillingDep = Annotated[Billing, Depends(get_billing)]


@router.post(
    "/checkout",
    response_model=CheckoutOut,
    status_code=201,
    responses={
        402: {
            "description": "The card was declined: error is Stripe's code (card_declined, "
            "incorrect_number, ...), decline_code the issuer's reason, order the failed order"
        },
        503: {"description": "The payment service could not be reached; the order failed"},
    },
)
def checkout(
    body: CheckoutIn,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
) -> CheckoutOut:
    """Buy a paid tier: one-time tiers are charged once, recurring ones start a subscription.

    The order is ``paid`` only once the payment event arrived; until then it is ``pending``
    (or ``requires_action`` for card authentication). A declined card answers 402 with the
    decline code, as Stripe does; the failed order is kept (see ``order``)."""
    tier = catalog.get_tier(session, body.tier_id)
    org = accounts.get_organization(session, body.org) if body.org else None
    buyer = Buyer(country=normalize_country(body.country), vat_id=normalize_vat_id(body.vat_id))
    if billing.settings.taxes.configured and buyer.country is None:
        raise ValidationFailed(
            "Give the buyer's country: tax is charged at its rate",
            code="country_required",
            field="country",
        )
    order = orders.start_checkout(
        session,
        billing,
        account=account,
        tier=tier,
        org=org,
        buyer=buyer,
        coupon_code=body.coupon,
        quantity=body.quantity,
        shown=shown_price(body.expected_total_minor, body.expected_due_now_minor),
    )
    session.commit()
    outcome = orders.pay(
        session,
        billing,
        order=order,
        payment=PaymentInput(payment_method=body.payment_method, card_number=body.card_number),
    )
    if outcome.status == "failed":
        session.commit()  # the failed order is kept, whatever the answer
        raise _payment_failed(outcome, order)
    return CheckoutOut(
        order=OrderOut.model_validate(order),
        next_action="authenticate" if outcome.status == "requires_action" else None,
        client_secret=outcome.client_secret,
        message=outcome.message,
    )


@router.get("/quote", response_model=QuoteOut)
def get_quote(
    billing: BillingDep,
    session: DbSession,
    tier_id: uuid.UUID,
    country: str | None = Query(default=None, max_length=2, description="Buyer's ISO country"),
    vat_id: str | None = Query(default=None, max_length=32, description="Buyer's EU VAT id"),
    quantity: int = Query(default=1, ge=1, le=MAX_QUANTITY),
    coupon: str | None = Query(default=None, max_length=64, description="A coupon code"),
) -> QuoteOut:
    """What a tier costs this buyer: the amounts the checkout shows and charges. An unusable
    coupon answers 422 with its reason (coupon_not_found, coupon_expired, ...)."""
    tier = catalog.get_tier(session, tier_id)
    if tier.product.status != "published" or not tier.active:
        raise NotFound("This tier is not available")
    buyer = Buyer(country=normalize_country(country), vat_id=normalize_vat_id(vat_id))
    row = None
    if coupon is not None and coupon.strip():
        row = coupons.for_checkout(session, code=coupon, tier=tier, account=None)
    q = billing.quote(tier, buyer, coupons.terms(row) if row else None, quantity)
    return QuoteOut(
        tier_id=tier.id,
        billing=q.kind.value,
        currency=q.currency,
        quantity=q.quantity,
        unit_amount_minor=q.unit_amount_minor,
        subtotal_minor=q.subtotal_minor,
        discount_minor=q.discount_minor,
        tax_minor=q.tax_minor,
        total_minor=q.total_minor,
        tax_rate=format(q.tax_rate, "f"),
        tax_label=q.tax_label,
        reverse_charge=q.reverse_charge,
        coupon_code=row.code if row else None,
        coupon_terms=coupons.describe(row) if row else None,
        interval=q.interval.value if q.interval else None,
        trial_days=q.trial_days,
        trial_end=q.trial_end,
        first_charge_at=q.first_charge_at,
        due_now_minor=q.due_now_minor,
    )


def _payment_failed(outcome: Outcome, order: orders.Order) -> StoreError:
    extra: dict[str, Any] = {
        "decline_code": outcome.decline_code,
        "order": OrderOut.model_validate(order).model_dump(mode="json"),
    }
    if outcome.code == orders.GATEWAY_UNAVAILABLE:
        return ServiceUnavailable(outcome.message, code=outcome.code, **extra)
    return PaymentRequired(
        outcome.message or "The payment failed.", code=outcome.code or "card_declined", **extra
    )


@router.get("/orders", response_model=list[OrderOut])
def my_orders(session: DbSession, account: CurrentAccount) -> list[OrderOut]:
    """Your orders, newest first."""
    return [OrderOut.model_validate(o) for o in orders.orders_of(session, account)]


@router.get("/orders/{order_id}", response_model=OrderOut)
def get_order(
    order_id: uuid.UUID,
    request: Request,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
) -> OrderOut:
    """One of your orders (administrators: any order). An unpaid order is checked with the
    payment gateway first, so a payment whose webhook has not arrived is fulfilled now."""
    order = orders.get_visible_order(session, order_id, account)
    fresh = catch_up(request, billing, order)
    return OrderOut.model_validate(fresh if fresh is not None else order)


@router.post("/orders/{order_id}/refunds", response_model=OrderOut)
def refund_order(
    order_id: uuid.UUID,
    body: RefundIn,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
) -> OrderOut:
    """Refund all (no amount) or part of a paid order. A full refund revokes access (and a
    subscription payment's subscription is canceled). Administrators refund any order; the
    seller's owners their own sales within the operator's window
    (``STORE_BILLING_PUBLISHER_REFUND_DAYS``), else 403 ``refund_window_over``."""
    order = orders.get_refundable_order(session, billing, order_id, account)
    orders.refund(session, billing, actor=account, order=order, amount_minor=body.amount_minor)
    return OrderOut.model_validate(order)


@router.get("/subscriptions", response_model=list[SubscriptionOut])
def my_subscriptions(session: DbSession, account: CurrentAccount) -> list[SubscriptionOut]:
    """Your subscriptions, newest first."""
    return [
        SubscriptionOut.model_validate(s) for s in subscriptions.subscriptions_of(session, account)
    ]


@router.post(
    "/subscriptions/{sub_id}/card",
    response_model=SubscriptionOut,
    responses={402: {"description": "The card was declined (error: Stripe's code)"}},
)
def replace_card(
    sub_id: uuid.UUID,
    body: CardIn,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
) -> SubscriptionOut:
    """Replace the card of a running subscription (Stripe: a PaymentMethod id from
    Stripe.js; test gateway: a test card number)."""
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    payment = PaymentInput(payment_method=body.payment_method, card_number=body.card_number)
    sub = subscriptions.replace_card(session, billing, sub=sub, payment=payment)
    return subscription_out(billing, sub)


def subscription_out(billing: Billing, sub: subscriptions.Subscription) -> SubscriptionOut:
    out = SubscriptionOut.model_validate(sub)
    if sub.pending_setup_ref is not None:
        out.card_confirmation_pending = True
        out.next_action = "authenticate"
        out.client_secret = billing.gateway.setup_client_secret(sub.pending_setup_ref)
    return out


@router.post(
    "/subscriptions/{sub_id}/card/confirm",
    response_model=SubscriptionOut,
    responses={
        402: {"description": "The bank did not confirm the card; the old card stays"},
        409: {"description": "nothing_to_confirm: no new card is waiting"},
    },
)
def confirm_card(
    sub_id: uuid.UUID,
    body: CardConfirmIn,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
) -> SubscriptionOut:
    """Finish replacing the card after the bank's confirmation (3-D Secure). While it is
    not confirmed yet the answer still says ``next_action: authenticate``."""
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    outcome = subscriptions.complete_card_setup(session, billing, sub=sub, approve=body.approve)
    if outcome.status == "failed":
        session.commit()  # the pending card is dropped, whatever the answer
        raise PaymentRequired(
            outcome.message or "The card could not be authenticated.",
            code=outcome.code or "setup_intent_authentication_failure",
        )
    return subscription_out(billing, sub)


@router.post(
    "/subscriptions/{sub_id}/pay",
    response_model=OrderOut,
    responses={
        402: {"description": "The card was declined (error: Stripe's code)"},
        409: {"description": "nothing_due: the subscription is not past due"},
    },
)
def pay_now(
    sub_id: uuid.UUID,
    body: CardIn,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
) -> OrderOut:
    """Pay a past-due subscription's failed invoice now, with a new card when one is given
    (the test gateway always needs one). The paid order is answered."""
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    payment = PaymentInput(payment_method=body.payment_method, card_number=body.card_number)
    order = subscriptions.pay_now(session, billing, sub=sub, payment=payment)
    return OrderOut.model_validate(order)


def proration_out(option: plan_changes.Option) -> ProrationOut:
    p, tier = option.proration, option.tier
    return ProrationOut(
        tier_id=tier.id,
        tier_name=tier.name,
        billing=str(tier.billing),
        currency=p.currency,
        interval_change=p.interval_change,
        unused_fraction=format(p.unused_fraction.quantize(Decimal("0.0001")), "f"),
        credit_net_minor=p.credit_net_minor,
        credit_tax_minor=p.credit_tax_minor,
        charge_net_minor=p.charge_net_minor,
        charge_tax_minor=p.charge_tax_minor,
        due_now_net_minor=p.due_now_net_minor,
        due_now_tax_minor=p.due_now_tax_minor,
        due_now_minor=p.due_now_minor,
        carried_minor=p.carried_minor,
        period_end=p.new_period_end,
        renews_at_minor=p.target.total_minor,
    )


@router.get(
    "/subscriptions/{sub_id}/plans",
    response_model=list[ProrationOut],
    responses={409: {"description": "The subscription cannot change plan now (code says why)"}},
)
def plan_options(
    sub_id: uuid.UUID,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
    tier_id: uuid.UUID | None = None,
) -> list[ProrationOut]:
    """The tiers this subscription can move to, each with the prorated price of moving now;
    with ``tier_id``, that one only (422 with the reason when it is not a possible target)."""
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    plan_changes.check_state(sub)
    if tier_id is not None:
        tier = catalog.get_tier(session, tier_id)
        option = plan_changes.Option(tier, plan_changes.proration(session, billing, sub, tier))
        return [proration_out(option)]
    return [proration_out(o) for o in plan_changes.options(session, billing, sub)]


@router.post(
    "/subscriptions/{sub_id}/change",
    response_model=PlanChangeOut,
    responses={
        402: {"description": "The charge of the change failed; the old plan stays"},
        409: {
            "description": "pay_first (past due), trialing, subscription_ended, "
            "change_in_progress, idempotency_key_reused, gateway_error"
        },
        422: {
            "description": "A bad target (field tier): other_product, same_plan, tier_is_free "
            "(cancel instead), target_not_recurring, tier_unavailable, currency_change"
        },
    },
)
def change_plan(
    sub_id: uuid.UUID,
    body: PlanChangeIn,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
    idempotency_key: Annotated[str | None, Header(max_length=80)] = None,
) -> PlanChangeOut:
    """Move the subscription to another tier of its product now, prorated: what is due is
    charged at once (card on file, or the card given), a credit is taken off the next
    charges. The same idempotency key answers the same change."""
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    tier = catalog.get_tier(session, body.tier_id)
    change = plan_changes.start(
        session, billing, sub=sub, tier=tier, actor=account, key=body.key or idempotency_key
    )
    if change.status == "pending":
        session.commit()  # recorded before the gateway is asked (reconcile completes it)
        payment = PaymentInput(payment_method=body.payment_method, card_number=body.card_number)
        change = plan_changes.complete(session, billing, change=change, payment=payment)
    out = PlanChangeOut.model_validate(change)
    if change.status == "failed":
        session.commit()  # the failed change is kept, whatever the answer
        raise PaymentRequired(
            change.failure_reason or "The payment failed.",
            code=change.failure_code or "payment_failed",
            change=out.model_dump(mode="json"),
        )
    return out


@router.post("/subscriptions/{sub_id}/{action}", response_model=SubscriptionOut)
def cancel_or_resume(
    sub_id: uuid.UUID,
    action: str,
    session: DbSession,
    billing: BillingDep,
    account: CurrentAccount,
) -> SubscriptionOut:
    """``cancel``: end at the close of the paid period; ``resume``: undo that."""
    if action not in ("cancel", "resume"):
        raise NotFound("Use cancel or resume")
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    sub = subscriptions.set_cancel_at_period_end(
        session, billing, sub=sub, cancel=action == "cancel"
    )
    return SubscriptionOut.model_validate(sub)


@router.get(
    "/sales/{org}",
    response_model=list[SalesRowOut],
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def org_sales(
    org: str,
    session: DbSession,
    account: CurrentAccount,
    since: datetime | None = Query(default=None, description="Paid at or after (ISO 8601)"),
    until: datetime | None = Query(default=None, description="Paid before (ISO 8601)"),
    format: str = Query(default="json", pattern="^(json|csv)$"),
) -> list[SalesRowOut] | Response:
    """Sales of an organization's products by month, product, tier and currency."""
    organization = accounts.get_organization(session, org)
    rows = sales.sales_of(session, actor=account, org=organization, since=since, until=until)
    if format == "csv":
        return Response(sales.to_csv(rows), media_type="text/csv; charset=utf-8")
    return [SalesRowOut.model_validate(r) for r in rows]


# --- coupons (publishers) ------------------------------------------------------------------


def coupon_out(coupon: coupons.Coupon) -> CouponOut:
    return CouponOut(
        id=coupon.id,
        code=coupon.code,
        product=coupon.product.repository,
        tier=coupon.tier.slug if coupon.tier is not None else None,
        percent_off=coupon.percent_off,
        amount_off_minor=coupon.amount_off_minor,
        currency=coupon.currency,
        duration=coupon.duration,
        duration_months=coupon.duration_months,
        max_redemptions=coupon.max_redemptions,
        times_redeemed=coupon.times_redeemed,
        once_per_customer=coupon.once_per_customer,
        expires_at=coupon.expires_at,
        active=coupon.active,
        state=coupons.state(coupon),
        terms=coupons.describe(coupon),
        created_at=coupon.created_at,
    )


@router.get("/coupons/{org}", response_model=list[CouponOut])
def list_coupons(org: str, session: DbSession, account: CurrentAccount) -> list[CouponOut]:
    """The organization's coupons, newest first (owners and the finance role)."""
    organization = accounts.get_organization(session, org)
    return [coupon_out(c) for c in coupons.coupons_of(session, actor=account, org=organization)]


@router.post("/coupons/{org}", response_model=CouponOut, status_code=201)
def create_coupon(
    org: str, body: CouponIn, session: DbSession, account: CurrentAccount
) -> CouponOut:
    """A coupon for one of the organization's products, or one tier of it (owners). Its terms
    never change; deactivate it and make another. 409 ``coupon_exists`` for a code the
    product has already."""
    organization = accounts.get_organization(session, org)
    spec = coupons.CouponSpec(**body.model_dump())
    coupon = coupons.create(session, actor=account, org=organization, spec=spec)
    return coupon_out(coupon)


@router.post("/coupons/{org}/{coupon_id}/deactivate", response_model=CouponOut)
def deactivate_coupon(
    org: str, coupon_id: uuid.UUID, session: DbSession, account: CurrentAccount
) -> CouponOut:
    """No new checkout may use the coupon; subscriptions that have it keep its discount for
    its duration (owners)."""
    organization = accounts.get_organization(session, org)
    coupon = coupons.deactivate(session, actor=account, org=organization, coupon_id=coupon_id)
    return coupon_out(coupon)
