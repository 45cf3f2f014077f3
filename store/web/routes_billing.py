"""Billing pages: checkout, order status, my purchases, receipts, publisher sales, admin orders."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Form, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from store import STATIC_DIR
from store.accounts import service as accounts
from store.accounts.models import Account, Membership, Organization
from store.billing import (
    access,
    coupons,
    orders,
    plan_changes,
    receipts,
    sales,
    subscriptions,
    trials,
)
from store.billing.gateway import PaymentInput
from store.billing.models import Coupon, Order
from store.billing.pricing import (
    MAX_QUANTITY,
    Buyer,
    normalize_country,
    normalize_vat_id,
    shown_price,
)
from store.billing.runtime import Billing, billing_of
from store.billing.sweep import maybe_sweep
from store.billing.test_gateway import TEST_CARDS, TestGateway
from store.billing.webhook_api import catch_up
from store.catalog import money
from store.catalog import service as catalog
from store.catalog.models import Product
from store.catalog.money import format_money
from store.deps import DbSession
from store.errors import NotFound, ValidationFailed
from store.licensing.models import Entitlement
from store.web import forms
from store.web.forms import NO_FORM, FormState
from store.web.routing import AdminAccount, RequiredAccount, page_router
from store.web.templating import flash, minor_exponent, redirect, render

router = page_router()
T = TypeVar("T")
FormStr = Annotated[str, Form(max_length=255)]

# The one external origin pages may use, and only on Stripe checkout pages.
STRIPE_CSP = (
    "default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' https://js.stripe.com; frame-src https://js.stripe.com "
    "https://hooks.stripe.com; connect-src 'self' https://api.stripe.com; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _billing(request: Request) -> Billing:
    return billing_of(request.app.state)


def _page(
    request: Request, name: str, context: dict[str, Any], billing: Billing, **kw: Any
) -> Response:
    context.setdefault("test_mode", billing.test_mode)
    context.setdefault("stripe_key", None if billing.test_mode else billing.gateway.publishable_key)
    context.setdefault("stripe_test_keys", not billing.test_mode and billing.gateway.test_mode)
    response = render(request, name, context, **kw)
    if context.get("uses_stripe_js"):
        response.headers["Content-Security-Policy"] = STRIPE_CSP
    return response


def _owned_orgs(session: Session, account: Account) -> list[Organization]:
    return list(
        session.scalars(
            select(Organization)
            .join(Membership, Membership.organization_id == Organization.id)
            .where(Membership.account_id == account.id, Membership.role == "owner")
            .order_by(Organization.slug)
        )
    )


@router.get("/billing/static/checkout.js", include_in_schema=False)
def checkout_js() -> Response:
    response = FileResponse(STATIC_DIR / "checkout.js", media_type="text/javascript")
    response.headers.update({"X-Content-Type-Options": "nosniff"})
    return response


# --- checkout -------------------------------------------------------------------------


def _tier(session: Session, tier_id: uuid.UUID) -> Any:
    tier = catalog.get_tier(session, tier_id)
    if tier.product.status != "published" or not tier.active or tier.is_free:
        raise NotFound("This tier is not for sale")
    return tier


@dataclass(frozen=True)
class _Choice:
    """What the buyer chose on the checkout page: the buyer's country and VAT id, how many,
    and the coupon (its code as typed, and the coupon when it may be used)."""

    buyer: Buyer
    quantity: int
    coupon_code: str
    coupon: Coupon | None


def _choose(
    session: Session,
    tier: Any,
    account: Account,
    *,
    country: str,
    vat_id: str,
    coupon: str,
    quantity: str,
) -> tuple[_Choice, dict[str, ValidationFailed]]:
    """Each input read on its own: one that is wrong keeps its default in the choice (the
    price shown), and what is wrong with it is kept under its field."""
    problems: dict[str, ValidationFailed] = {}

    def read(field: str, parse: Callable[[], T], default: T) -> T:
        try:
            return parse()
        except ValidationFailed as exc:
            problems[field] = exc
            return default

    code = coupon.strip()
    choice = _Choice(
        buyer=Buyer(
            country=read("country", lambda: normalize_country(country), None),
            vat_id=read("vat_id", lambda: normalize_vat_id(vat_id), None),
        ),
        quantity=read("quantity", lambda: _quantity(tier, quantity), 1),
        coupon_code=code,
        coupon=read(
            "coupon",
            lambda: (
                coupons.for_checkout(session, code=code, tier=tier, account=account)
                if code
                else None
            ),
            None,
        ),
    )
    return choice, problems


def _refuse(problems: dict[str, ValidationFailed]) -> None:
    """Nothing when nothing is wrong; else the one error, or each beside its field."""
    if len(problems) == 1:
        raise next(iter(problems.values()))
    if problems:
        raise forms.FieldErrors({field: exc.detail for field, exc in problems.items()})


def _checkout_page(
    request: Request,
    session: Session,
    billing: Billing,
    account: Account,
    tier: Any,
    choice: _Choice,
    form: FormState = NO_FORM,
    status: int = 200,
) -> Response:
    """The checkout page for ``choice``: the price preview (form "quote", a GET) and the
    card form ("checkout"); ``form`` is the one that was refused, its errors by field."""
    eligible = trials.eligible(session, account=account, product=tier.product)
    terms = coupons.terms(choice.coupon) if choice.coupon is not None else None
    quote = billing.quote(
        tier, replace(choice.buyer, trial_eligible=eligible), terms, choice.quantity
    )
    return _page(
        request,
        "billing/checkout.html",
        {
            "tier": tier,
            "product": tier.product,
            "quote": quote,
            "trial_used": tier.trial_days > 0 and quote.recurring and not quote.trial,
            "tax_configured": billing.settings.taxes.configured,
            "country": choice.buyer.country,
            "vat_id": choice.buyer.vat_id,
            "orgs": _owned_orgs(session, account),
            "test_cards": TEST_CARDS,
            "form": form,
            "coupon_code": choice.coupon_code,
            "coupon": choice.coupon,
            "coupon_terms": coupons.describe(choice.coupon) if choice.coupon is not None else "",
            "per_seat": tier.seats is not None,
            "uses_stripe_js": not billing.test_mode,
        },
        billing,
        status=status,
        no_store=True,
    )


def _quantity(tier: Any, raw: str) -> int:
    """The quantity field: empty is one; only tiers with a seat limit take more."""
    text = raw.strip()
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= MAX_QUANTITY:
        raise ValidationFailed(
            f"Quantity must be a whole number from 1 to {MAX_QUANTITY}",
            code="bad_quantity",
            field="quantity",
        )
    quantity = int(text)
    orders.check_quantity(tier, quantity)
    return quantity


@router.get("/checkout/{tier_id}")
def checkout_page(
    request: Request,
    tier_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    country: Annotated[str, Query(max_length=8)] = "",
    vat_id: Annotated[str, Query(max_length=40)] = "",
    coupon: Annotated[str, Query(max_length=64)] = "",
    quantity: Annotated[str, Query(max_length=12)] = "",
) -> Response:
    """The checkout form: Stripe Elements, or the test gateway's own card form (TEST MODE).
    With tax configured it asks for the buyer's country (and a business's VAT id), and
    ``?country=`` shows the price for that country; ``?coupon=`` the price with a coupon.
    A wrong one is shown beside its input (422), with the price without it."""
    billing = _billing(request)
    tier = _tier(session, tier_id)
    choice, problems = _choose(
        session, tier, account, country=country, vat_id=vat_id, coupon=coupon, quantity=quantity
    )
    show = partial(_checkout_page, request, session, billing, account, tier, choice)

    def preview() -> None:
        _refuse(problems)

    return forms.submit(
        session,
        request.query_params,
        "quote",
        preview,
        failed=show,
        done=lambda _: show(),
        undo=False,  # reads only
    )


@router.post("/checkout/{tier_id}")
def checkout_submit(
    request: Request,
    tier_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    form: forms.Form,
    card_number: FormStr = "",
    payment_method: FormStr = "",
    org_slug: Annotated[str, Form(alias="org", max_length=64)] = "",
    country: Annotated[str, Form(max_length=8)] = "",
    vat_id: Annotated[str, Form(max_length=40)] = "",
    coupon: Annotated[str, Form(max_length=64)] = "",
    quantity: Annotated[str, Form(max_length=12)] = "",
    expected_total_minor: Annotated[str, Form(max_length=20)] = "",
    expected_due_now_minor: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Create the order, ask the gateway to charge, and go to the order's status page; what
    is wrong is shown beside its input, with the rest kept. The form carries the price it
    showed: a price changed since is refused and the page shows the new one."""
    billing = _billing(request)
    tier = _tier(session, tier_id)
    org = accounts.get_organization(session, org_slug) if org_slug else None
    payment = PaymentInput(payment_method=payment_method or None, card_number=card_number or None)
    choice, problems = _choose(
        session, tier, account, country=country, vat_id=vat_id, coupon=coupon, quantity=quantity
    )

    def start() -> Order:
        if billing.settings.taxes.configured and choice.buyer.country is None:
            problems.setdefault(
                "country",
                ValidationFailed("Choose your country.", code="country_required", field="country"),
            )
        if billing.test_mode and not payment.card_number:
            problems["card_number"] = ValidationFailed(
                "Enter a test card number.", code="card_required", field="card_number"
            )
        if not billing.test_mode and not payment.payment_method:
            problems["payment_method"] = ValidationFailed(
                "Enter your card.", code="card_required", field="payment_method"
            )
        _refuse(problems)
        return orders.start_checkout(
            session,
            billing,
            account=account,
            tier=tier,
            org=org,
            buyer=choice.buyer,
            coupon_code=choice.coupon_code,
            quantity=choice.quantity,
            shown=shown_price(expected_total_minor, expected_due_now_minor),
        )

    def pay(order: Order) -> Response:
        # Committed before the gateway is asked, so an early webhook finds the order.
        session.commit()
        orders.pay(session, billing, order=order, payment=payment)
        return redirect(f"/checkout/orders/{order.id}")

    return forms.submit(
        session,
        form,
        "checkout",
        start,
        failed=partial(_checkout_page, request, session, billing, account, tier, choice),
        done=pay,
    )


# --- order status and authentication ----------------------------------------------------


def _my_order(session: Session, order_id: uuid.UUID, account: Account) -> Order:
    order = orders.get_order(session, order_id)
    if order.account_id != account.id:
        raise NotFound("No such order")
    return order


@router.get("/checkout/orders/{order_id}")
def order_status(
    request: Request, order_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    """What happened to a checkout, truthfully; refreshes itself while the payment event is
    still on its way."""
    billing = _billing(request)
    order = _my_order(session, order_id, account)
    if catch_up(request, billing, order) is not None:
        # The webhook had not arrived: the gateway's answer was applied; show it.
        return redirect(f"/checkout/orders/{order.id}")
    gateway_status = None
    client_secret = None
    if order.status in ("pending", "requires_action") and not billing.test_mode:
        gateway_status = billing.gateway.payment_status(order)
        if order.status == "requires_action":
            client_secret = getattr(billing.gateway, "client_secret", lambda o: None)(order)
    entitlement = session.get(Entitlement, order.entitlement_id) if order.entitlement_id else None
    response = _page(
        request,
        "billing/order.html",
        {
            "order": order,
            "product": order.product,
            "tier": order.tier,
            "gateway_status": gateway_status,
            "client_secret": client_secret,
            "entitlement": entitlement,
            "uses_stripe_js": client_secret is not None,
        },
        billing,
        no_store=True,
    )
    if order.status == "pending" or (order.status == "requires_action" and gateway_status):
        response.headers["Refresh"] = "3"
    return response


@router.get("/checkout/orders/{order_id}/authenticate")
def authenticate_page(
    request: Request, order_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    """TEST MODE: the simulated card authentication step (3-D Secure)."""
    billing = _billing(request)
    order = _my_order(session, order_id, account)
    if not isinstance(billing.gateway, TestGateway) or order.status != "requires_action":
        raise NotFound("Nothing to authenticate")
    return _page(request, "billing/authenticate.html", {"order": order}, billing, no_store=True)


@router.post("/checkout/orders/{order_id}/authenticate")
def authenticate_submit(
    request: Request,
    order_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    decision: FormStr = "",
) -> Response:
    """TEST MODE: approve or fail the simulated authentication."""
    billing = _billing(request)
    order = _my_order(session, order_id, account)
    gateway = billing.gateway
    if not isinstance(gateway, TestGateway) or order.status != "requires_action":
        raise NotFound("Nothing to authenticate")
    gateway.authenticate(session, billing, order=order, approve=decision == "approve")
    return redirect(f"/checkout/orders/{order.id}")


# --- my purchases -----------------------------------------------------------------------


@router.get("/my/purchases")
def my_purchases(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """Orders and subscriptions, with cancel/resume and receipts."""
    billing = _billing(request)
    maybe_sweep(request.app.state.sessionmaker, billing)
    return _page(
        request,
        "billing/purchases.html",
        {
            "orders": orders.orders_of(session, account),
            "subscriptions": subscriptions.subscriptions_of(session, account),
            "end_message": access.end_message,
        },
        billing,
    )


@router.get("/my/purchases/subscriptions/{sub_id}")
def subscription_page(
    request: Request, sub_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    """One subscription's billing: its plan, the next charge (and its coupon), the card
    (replace it), a past-due payment (pay it now), cancel or resume, and its payments."""
    billing = _billing(request)
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    payments = list(
        session.scalars(
            select(Order)
            .where(Order.subscription_id == sub.id, Order.gateway_ref.is_not(None))
            .order_by(Order.created_at.desc())
        )
    )
    coupon_left = None
    if sub.coupon is not None:
        count = coupons.terms(sub.coupon).charges(sub.interval)
        coupon_left = None if count is None else max(0, count - sub.paid_charges)
    return _page(
        request,
        "billing/subscription.html",
        {
            "sub": sub,
            "payments": payments,
            "due": subscriptions.failed_payment(session, sub) if sub.status == "past_due" else None,
            "coupon_left": coupon_left,
            "plan_options": plan_changes.options(session, billing, sub),
            "setup_secret": (
                billing.gateway.setup_client_secret(sub.pending_setup_ref)
                if sub.pending_setup_ref
                else None
            ),
            "changes": plan_changes.changes_of(session, sub),
            "end_message": access.end_message,
            "test_cards": TEST_CARDS,
            "uses_stripe_js": not billing.test_mode,
        },
        billing,
        no_store=True,
    )


@router.post("/my/purchases/subscriptions/{sub_id}/card")
def replace_card(
    request: Request,
    sub_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    form: forms.Form,
    card_number: FormStr = "",
    payment_method: FormStr = "",
    pay: FormStr = "",
) -> Response:
    """Replace the card; with ``pay``, also pay a past-due invoice with it now."""
    billing = _billing(request)
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    payment = PaymentInput(payment_method=payment_method or None, card_number=card_number or None)
    page = f"/my/purchases/subscriptions/{sub.id}"

    def change() -> str:
        if pay:
            order = subscriptions.pay_now(session, billing, sub=sub, payment=payment)
            paid = format_money(order.total_minor, order.currency)
            return f"Paid {paid}: your subscription is active again."
        subscriptions.replace_card(session, billing, sub=sub, payment=payment)
        if sub.pending_setup_ref is not None:
            return "Your bank asks you to confirm the new card: confirm it below."
        return "Your card was replaced; the next charges use it."

    return _payment_form(request, session, form, page, change, raises=(401, 403, 404))


def _payment_form(
    request: Request,
    session: Session,
    form: FormData,
    page: str,
    action: Callable[[], str | Response],
    *,
    raises: Collection[int],
) -> Response:
    """A billing button that may reach the payment gateway: what the action recorded stays
    when it is refused (a declined charge); its message, or the refusal, is flashed on
    ``page`` (the action may answer itself instead)."""
    return forms.submit(
        session,
        form,
        "payment",
        action,
        failed=forms.refused_back(request, page),
        done=lambda said: (
            said if isinstance(said, Response) else forms.redirect_with(request, said, page)
        ),
        undo=False,
        raises=raises,
    )


@router.post("/my/purchases/subscriptions/{sub_id}/card/confirm")
def confirm_card(
    request: Request,
    sub_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    form: forms.Form,
    decision: FormStr = "",
) -> Response:
    """Back from the bank's confirmation of a new card (Stripe.js), or the test gateway's
    simulated answer (``decision``: approve or fail)."""
    billing = _billing(request)
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    page = f"/my/purchases/subscriptions/{sub.id}"
    approve = {"approve": True, "fail": False}.get(decision) if billing.test_mode else None

    def confirm() -> str | Response:
        outcome = subscriptions.complete_card_setup(session, billing, sub=sub, approve=approve)
        if outcome.status == "succeeded":
            return "Your new card is confirmed; the next charges use it."
        if outcome.status == "failed":
            message = f"The new card was not confirmed: {outcome.message} Your old card stays."
        else:
            message = "Your bank has not confirmed the new card yet."
        return forms.redirect_with(request, message, page, "error")

    return _payment_form(request, session, form, page, confirm, raises=(401, 403, 404))


@router.get("/my/purchases/subscriptions/{sub_id}/change")
def change_plan_page(
    request: Request,
    sub_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    tier: Annotated[uuid.UUID, Query()],
) -> Response:
    """The prorated price of moving to ``tier`` now, to confirm (nothing changes yet)."""
    billing = _billing(request)
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    target = catalog.get_tier(session, tier)
    page = f"/my/purchases/subscriptions/{sub.id}"
    return forms.submit(
        session,
        request.query_params,
        "plan",
        lambda: plan_changes.proration(session, billing, sub, target),
        failed=forms.refused_back(request, page),  # not offered: said on the subscription
        done=lambda proration: _page(
            request,
            "billing/change_plan.html",
            {"sub": sub, "target": target, "p": proration, "key": uuid.uuid4().hex},
            billing,
            no_store=True,
        ),
        undo=False,  # reads only
        raises=(401, 403, 404),
    )


@router.post("/my/purchases/subscriptions/{sub_id}/change")
def change_plan(
    request: Request,
    sub_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    form: forms.Form,
    tier: FormStr = "",
    key: FormStr = "",
) -> Response:
    """Confirm a plan change; the form's key makes a double click change once."""
    billing = _billing(request)
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    page = f"/my/purchases/subscriptions/{sub.id}"

    def change_plan() -> str | Response:
        try:
            tier_id = uuid.UUID(tier)
        except ValueError:
            raise ValidationFailed("Choose a plan", code="bad_tier", field="tier") from None
        target = catalog.get_tier(session, tier_id)
        change = plan_changes.start(
            session, billing, sub=sub, tier=target, actor=account, key=key or None
        )
        if change.status == "pending":
            session.commit()  # recorded before the gateway is asked (reconcile completes it)
            change = plan_changes.complete(session, billing, change=change)
        if change.status == "failed":
            message = f"The plan was not changed: {change.failure_reason}"
            return forms.redirect_with(request, message, page, "error")
        message = f"Your plan is now {change.to_tier.name}."
        if change.due_minor:
            message += f" We charged {format_money(change.due_minor, change.currency)}."
        elif change.carried_minor:
            credit = format_money(change.carried_minor, change.currency)
            message += f" A credit of {credit} is taken off your next payments."
        return message

    return _payment_form(request, session, form, page, change_plan, raises=(401, 403))


@router.post("/my/purchases/subscriptions/{sub_id}/{action}")
def cancel_or_resume(
    request: Request, sub_id: uuid.UUID, action: str, session: DbSession, account: RequiredAccount
) -> Response:
    if action not in ("cancel", "resume"):
        raise NotFound("There is nothing at this address")
    billing = _billing(request)
    sub = subscriptions.get_visible_subscription(session, sub_id, account)
    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=action == "cancel")
    if action == "cancel":
        flash(
            request, f"{sub.product.title} ({sub.tier.name}) ends at the close of the paid period."
        )
    else:
        flash(request, f"{sub.product.title} ({sub.tier.name}) renews again.")
    if request.headers.get("referer", "").endswith(f"/my/purchases/subscriptions/{sub.id}"):
        return redirect(f"/my/purchases/subscriptions/{sub.id}")
    return redirect("/my/purchases")


@router.get("/my/purchases/orders/{order_id}/receipt")
def receipt(
    request: Request, order_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    """A printable receipt for a paid order."""
    billing = _billing(request)
    order = _receipt_order(session, order_id, account)
    return _page(
        request,
        "billing/receipt.html",
        {"order": order, "receipt": _receipt(request, billing, order)},
        billing,
    )


def _receipt_order(session: Session, order_id: uuid.UUID, account: Account) -> Order:
    order = orders.get_visible_order(session, order_id, account)
    if order.paid_at is None or order.receipt_number is None:
        raise NotFound("This order has no receipt: it was not paid")
    return order


def _receipt(request: Request, billing: Billing, order: Order) -> receipts.Receipt:
    store_url = str(request.app.state.settings.public_url).rstrip("/")
    return receipts.build(order, tax_label=billing.settings.tax_label, store_url=store_url)


@router.get("/my/purchases/orders/{order_id}/receipt.pdf")
def receipt_pdf(
    request: Request, order_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    """The receipt as a PDF document."""
    billing = _billing(request)
    order = _receipt_order(session, order_id, account)
    body = receipts.to_pdf(_receipt(request, billing, order))
    response = Response(body, media_type="application/pdf")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="receipt-{order.receipt_number}.pdf"'
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --- publisher sales --------------------------------------------------------------------


@router.get("/publish/{org}/-/sales")
def sales_page(
    request: Request, org: str, session: DbSession, account: RequiredAccount
) -> Response:
    """Sales by month, product and tier, with CSV export."""
    billing = _billing(request)
    organization = accounts.get_organization(session, org)
    rows = sales.sales_of(session, actor=account, org=organization)
    return _page(
        request,
        "billing/sales.html",
        {"org": organization, "rows": rows, "totals": sales.totals(rows)},
        billing,
    )


@router.get("/publish/{org}/-/sales.csv")
def sales_csv(request: Request, org: str, session: DbSession, account: RequiredAccount) -> Response:
    organization = accounts.get_organization(session, org)
    rows = sales.sales_of(session, actor=account, org=organization)
    response = Response(sales.to_csv(rows), media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{organization.slug}-sales.csv"'
    )
    return response


@router.get("/publish/{org}/-/orders")
def publisher_orders(
    request: Request, org: str, session: DbSession, account: RequiredAccount
) -> Response:
    """The organization's paid orders (owners), with refunds inside the operator's window."""
    billing = _billing(request)
    organization = accounts.get_organization(session, org)
    rows = orders.sales_orders(session, account, organization)
    return _page(
        request,
        "billing/publisher_orders.html",
        {
            "org": organization,
            "orders": rows,
            "refundable": {o.id for o in rows if orders.may_refund(session, billing, account, o)},
            "window_days": billing.settings.publisher_refund_days,
        },
        billing,
    )


@router.post("/publish/{org}/-/orders/{order_id}/refund")
def publisher_refund(
    request: Request,
    org: str,
    order_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    form: forms.Form,
    amount: FormStr = "",
) -> Response:
    """Refund the amount given (empty: everything not refunded yet) of one's own sale."""
    billing = _billing(request)
    organization = accounts.get_organization(session, org)
    order = orders.get_refundable_order(session, billing, order_id, account)
    if order.product.organization_id != organization.id:
        raise NotFound("No such order")

    def refund() -> str:
        amount_minor = parse_amount(amount, order.currency)
        orders.refund(session, billing, actor=account, order=order, amount_minor=amount_minor)
        what = "Refunded" if order.status == "refunded" else "Refund recorded for"
        return f"{what} order {order.receipt_number}."

    page = f"/publish/{organization.slug}/-/orders"
    return _payment_form(request, session, form, page, refund, raises=())


# --- publisher coupons ------------------------------------------------------------------


def _coupons_page(
    request: Request,
    session: Session,
    billing: Billing,
    account: Account,
    organization: Organization,
    form: FormState = NO_FORM,
    status: int = 200,
) -> Response:
    rows = coupons.coupons_of(session, actor=account, org=organization)
    products = [
        p
        for p in session.scalars(
            select(Product)
            .where(Product.organization_id == organization.id)
            .order_by(Product.title)
        )
        if any(not t.is_free for t in p.tiers)
    ]
    return _page(
        request,
        "billing/coupons.html",
        {
            "org": organization,
            "coupons": rows,
            "state": coupons.state,
            "describe": coupons.describe,
            "products": products,
            "product_options": [(p.repository, p.title) for p in products],
            "may_edit": accounts.has_role(session, account, organization, "owner"),
            "form": form,
        },
        billing,
        status=status,
    )


@router.get("/publish/{org}/-/coupons")
def coupons_page(
    request: Request, org: str, session: DbSession, account: RequiredAccount
) -> Response:
    """The organization's coupons, how often each was redeemed, and a form for a new one."""
    billing = _billing(request)
    organization = accounts.get_organization(session, org)
    return _coupons_page(request, session, billing, account, organization)


def _optional_int(raw: str, what: str, field: str) -> int | None:
    text = raw.strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValidationFailed(
            f"{what} must be a whole number", code="bad_coupon_number", field=field
        )
    return int(text)


def _expiry(raw: str) -> datetime | None:
    text = raw.strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            "The expiry is a date such as 2027-01-31", code="bad_coupon_expiry", field="expires"
        ) from None
    # Valid through the whole day given (UTC).
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


@router.post("/publish/{org}/-/coupons")
def create_coupon(
    request: Request,
    org: str,
    session: DbSession,
    account: RequiredAccount,
    form: forms.Form,
    code: FormStr = "",
    product: FormStr = "",
    tier: FormStr = "",
    kind: FormStr = "percent",
    value: FormStr = "",
    duration: FormStr = "once",
    months: FormStr = "",
    max_redemptions: FormStr = "",
    once_per_customer: FormStr = "",
    expires: FormStr = "",
) -> Response:
    """Make a coupon (owners); every problem is shown on the form again."""
    billing = _billing(request)
    organization = accounts.get_organization(session, org)

    def create() -> Coupon:
        if kind not in ("percent", "amount"):
            raise ValidationFailed(
                "Choose percent or amount off", code="coupon_percent_or_amount", field="kind"
            )
        spec = coupons.CouponSpec(
            code=code,
            product=product,
            tier=tier or None,
            percent_off=value if kind == "percent" else None,
            amount_off=value if kind == "amount" else None,
            duration=duration,
            duration_months=(
                _optional_int(months, "Months", "months") if duration == "repeating" else None
            ),
            max_redemptions=_optional_int(max_redemptions, "Max redemptions", "max_redemptions"),
            once_per_customer=bool(once_per_customer),
            expires_at=_expiry(expires),
        )
        return coupons.create(session, actor=account, org=organization, spec=spec)

    return forms.submit(
        session,
        form,
        "coupon",
        create,
        failed=partial(_coupons_page, request, session, billing, account, organization),
        done=lambda coupon: forms.redirect_with(
            request,
            f"Coupon {coupon.code} made: {coupons.describe(coupon)}.",
            f"/publish/{organization.slug}/-/coupons",
        ),
        public={"code"},
        raises=(401, 403),  # not an owner: the error page, as for the other owner pages
    )


@router.post("/publish/{org}/-/coupons/{coupon_id}/deactivate")
def deactivate_coupon(
    request: Request, org: str, coupon_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    """No new checkout may use the coupon (owners)."""
    organization = accounts.get_organization(session, org)
    coupon = coupons.deactivate(session, actor=account, org=organization, coupon_id=coupon_id)
    flash(request, f"Coupon {coupon.code} deactivated.")
    return redirect(f"/publish/{organization.slug}/-/coupons")


# --- administration ---------------------------------------------------------------------


@router.get("/admin/orders")
def admin_orders(request: Request, session: DbSession, admin: AdminAccount) -> Response:
    billing = _billing(request)
    recent = list(session.scalars(select(Order).order_by(Order.created_at.desc()).limit(200)))
    return _page(request, "billing/admin_orders.html", {"orders": recent}, billing)


@router.get("/admin/orders/{order_id}")
def admin_order(
    request: Request, order_id: uuid.UUID, session: DbSession, admin: AdminAccount
) -> Response:
    """An order with its payment details, and full or partial refunds."""
    billing = _billing(request)
    order = orders.get_order(session, order_id)
    entitlement = session.get(Entitlement, order.entitlement_id) if order.entitlement_id else None
    return _page(
        request,
        "billing/admin_order.html",
        {"order": order, "entitlement": entitlement, "exponent": minor_exponent(order.currency)},
        billing,
    )


def parse_amount(raw: str, currency: str) -> int | None:
    """ "12.50" → 1250 (in the currency's minor unit); empty → None (everything)."""
    amount = money.parse_amount(raw, currency, what="The amount", field="amount")
    if amount == 0:
        raise ValidationFailed("The amount must be more than 0", field="amount")
    return amount


@router.post("/admin/orders/{order_id}/refund")
def admin_refund(
    request: Request,
    order_id: uuid.UUID,
    session: DbSession,
    admin: AdminAccount,
    amount: FormStr = "",
) -> Response:
    """Refund the amount given (empty: everything not refunded yet)."""
    billing = _billing(request)
    order = orders.get_order(session, order_id)
    amount_minor = parse_amount(amount, order.currency)
    orders.refund(session, billing, actor=admin, order=order, amount_minor=amount_minor)
    flash(request, "Refunded." if order.status == "refunded" else "Refund recorded.")
    return redirect(f"/admin/orders/{order.id}")
