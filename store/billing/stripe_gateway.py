"""Stripe, through the official SDK (``stripe.StripeClient``).

Stays within what both Stripe and localstripe accept (docs: /work/shared/design): one-time
payments are PaymentIntents confirmed server-side with a PaymentMethod collected by Stripe
Elements; subscriptions use Plans with deterministic ids (one item each) and the customer's
``invoice_settings.default_payment_method``. Response shapes vary (expanded ids, the period
end on the item or on the subscription), so fields are read through ``obj_id``/``dig``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.billing.config import BillingSettings
from store.billing.gateway import GatewayError, Outcome, PaymentInput, dig, obj_id, refused
from store.billing.models import (
    GatewayCustomer,
    GatewayTaxRate,
    Order,
    PlanChange,
    Subscription,
    TierPrice,
)
from store.billing.pricing import BillingKind, Quote
from store.billing.runtime import Billing
from store.billing.shapes import item_subscription, paid_by, payment_in_invoice
from store.billing.subscriptions import invoice_amounts
from store.catalog.models import Tier
from store.db import lock_row

if TYPE_CHECKING:
    from stripe._request_options import RequestOptions

log = logging.getLogger("store.billing.stripe")
T = TypeVar("T")


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _declined(exc: stripe.CardError, **refs: Any) -> Outcome:
    return refused(
        exc.error,
        message=exc.user_message or "Your card was declined.",
        code=str(exc.code or "card_declined"),
        **refs,
    )


class _Asking:
    """Around a request to Stripe: an error it answers with is the gateway's (GatewayError),
    not the buyer's. (A class, not a generator: it never swallows what it does not map.)"""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, stripe.StripeError):
            raise GatewayError(str(exc)) from exc


def _asking() -> _Asking:
    return _Asking()


def _with_card(request: Callable[[], T], *, intent: bool = False) -> T | Outcome:
    """A request that uses the buyer's card: a card Stripe refused is the buyer's declined
    outcome (with the PaymentIntent the refusal made, for ``intent``); any other error is
    the gateway's."""
    try:
        return request()
    except stripe.CardError as exc:
        if not intent:
            return _declined(exc)
        return _declined(exc, payment_ref=obj_id(dig(exc.error, "payment_intent")))
    except stripe.StripeError as exc:
        raise GatewayError(str(exc)) from exc


def _no_such_route(exc: stripe.StripeError) -> bool:
    """An API this server does not have (localstripe: a 404 page, not a JSON error) or a
    request it refuses as such (Stripe: 4xx ``invalid_request_error``)."""
    return isinstance(exc, stripe.InvalidRequestError) or exc.http_status == 404


def _taxed(subscription: Subscription) -> bool:
    return Decimal(subscription.tax_rate or "0") > 0


def plan_id(tier: Tier, price: TierPrice) -> str:
    """Deterministic: one plan per tier, period, currency and amount (never mutated)."""
    return f"store-{tier.id.hex}-{price.billing}-{price.amount_minor}{price.currency}"


def idempotent(key: str) -> RequestOptions:
    """Request options with an idempotency key derived from the store's own ids: a retried
    or repeated create returns the first object instead of making another."""
    return {"idempotency_key": f"store-{key}"}


def product_id(tier: Tier) -> str:
    return f"store-{tier.product_id.hex}"


class StripeGateway:
    name = "stripe"
    test_mode = False

    def __init__(self, settings: BillingSettings, *, testing: bool = False) -> None:
        assert settings.stripe_secret_key
        self.settings = settings
        self.publishable_key = settings.stripe_publishable_key
        self.test_mode = settings.stripe_secret_key.startswith("sk_test_")
        self.client = stripe.StripeClient(
            settings.stripe_secret_key,
            base_addresses={"api": settings.stripe_api_base},
            max_network_retries=0 if testing else 2,
        )
        self.v1 = self.client.v1

    # --- catalogue ----------------------------------------------------------------------

    def _ensure_product(self, tier: Tier) -> str:
        product = tier.product
        pid = product_id(tier)
        data: Any = {"name": product.title[:250] or product.repository}
        try:
            self.v1.products.create(
                {  # type: ignore[typeddict-item]
                    "id": pid,
                    **data,
                    "metadata": {"product_id": str(product.id), "repository": product.repository},
                },
                options=idempotent(f"product-{pid}-{data['name']}"),
            )
        except stripe.StripeError as exc:
            if exc.http_status not in (400, 409):
                raise GatewayError(str(exc)) from exc
            with _asking():
                self.v1.products.update(pid, data)
        return pid

    def sync_price(self, session: Session, *, tier: Tier, price: TierPrice) -> str | None:
        pid = self._ensure_product(tier)
        interval = BillingKind(price.billing).interval
        if interval is None:
            return None  # PaymentIntents carry the amount; no gateway price is needed
        plan = plan_id(tier, price)
        try:
            self.v1.plans.create(
                {
                    "id": plan,
                    "product": pid,
                    "amount": price.amount_minor,
                    "currency": price.currency,
                    "interval": interval.value,
                    "metadata": {"tier_id": str(tier.id)},
                },
                options=idempotent(f"plan-{plan}"),
            )
        except stripe.StripeError as exc:
            if exc.http_status not in (400, 409):
                raise GatewayError(str(exc)) from exc
            with _asking():  # it exists already (same id = same amount): reuse, never change it
                self.v1.plans.retrieve(plan)
        return plan

    # --- customers ----------------------------------------------------------------------

    def _customer(self, session: Session, account: Account) -> str:
        """The account's Stripe customer, made once.

        The account's row is locked first, so two checkouts of one account at the same
        instant (two processes) make one customer: the second waits and finds the first's
        row. The creation also carries an idempotency key, so a retried request reuses it.
        """
        lock_row(session, Account, account.id, populate=False)
        find = select(GatewayCustomer).where(
            GatewayCustomer.account_id == account.id, GatewayCustomer.gateway == self.name
        )
        row = session.scalar(find.execution_options(populate_existing=True))
        if row is not None:
            return row.gateway_ref
        with _asking():
            customer = self.v1.customers.create(
                {"email": account.email, "metadata": {"account_id": str(account.id)}},
                options=idempotent(f"customer-{account.id}"),
            )
        try:
            with session.begin_nested():
                session.add(
                    GatewayCustomer(
                        account_id=account.id, gateway=self.name, gateway_ref=customer.id
                    )
                )
        except IntegrityError:
            # Recorded meanwhile by a writer that did not take the lock: keep theirs.
            self._delete_customer(customer.id)
            row = session.scalar(find)
            assert row is not None
            return row.gateway_ref
        return str(customer.id)

    def _tax_rate(self, session: Session, rate: str, label: str) -> str:
        """The Stripe TaxRate (exclusive) for a rate and label, made once and kept."""
        label = label[:50]
        find = select(GatewayTaxRate).where(
            GatewayTaxRate.gateway == self.name,
            GatewayTaxRate.rate == rate,
            GatewayTaxRate.label == label,
        )
        row = session.scalar(find)
        if row is not None:
            return row.gateway_ref
        with _asking():
            created = self.v1.tax_rates.create(
                cast(Any, {"display_name": label, "percentage": rate, "inclusive": False}),
                options=idempotent(f"tax-rate-{rate}-{label}"),
            )
        try:
            with session.begin_nested():
                session.add(
                    GatewayTaxRate(
                        gateway=self.name, rate=rate, label=label, gateway_ref=created.id
                    )
                )
        except IntegrityError:
            row = session.scalar(find)
            assert row is not None
            return row.gateway_ref
        return str(created.id)

    def _delete_customer(self, ref: str) -> None:
        try:
            self.v1.customers.delete(ref)
        except stripe.StripeError as exc:
            log.warning("could not delete duplicate customer %s: %s", ref, exc)

    # --- one-time payments --------------------------------------------------------------

    def pay_once(
        self, session: Session, billing: Billing, *, order: Order, payment: PaymentInput
    ) -> Outcome:
        if not payment.payment_method:
            return Outcome("failed", message="No card was entered.", code="payment_method_required")
        customer = self._customer(session, order.account)
        params: dict[str, Any] = {
            "amount": order.total_minor,
            "currency": order.currency,
            "customer": customer,
            "payment_method": payment.payment_method,
            "payment_method_types": ["card"],
            "confirm": True,
            "metadata": {
                "order_id": str(order.id),
                "account_id": str(order.account_id),
                "tier_id": str(order.tier_id),
            },
        }
        pi = _with_card(
            lambda: self.v1.payment_intents.create(
                cast(Any, params), options=idempotent(f"order-{order.id}-payment")
            ),
            intent=True,
        )
        return pi if isinstance(pi, Outcome) else self._intent_outcome(pi)

    @staticmethod
    def _intent_outcome(pi: Any, **refs: Any) -> Outcome:
        status = str(pi["status"])
        if status == "succeeded":
            return Outcome("succeeded", payment_ref=pi.id, **refs)
        if status in ("requires_action", "requires_confirmation"):
            return Outcome(
                "requires_action", payment_ref=pi.id, client_secret=pi["client_secret"], **refs
            )
        if status == "processing":
            return Outcome("processing", payment_ref=pi.id, **refs)
        return refused(
            dig(pi, "last_payment_error"),
            payment_ref=pi.id,
            **refs,
        )

    # --- subscriptions ------------------------------------------------------------------

    def subscribe(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        order: Order,
        account: Account,
        price: TierPrice,
        payment: PaymentInput,
    ) -> Outcome:
        if not payment.payment_method:
            return Outcome("failed", message="No card was entered.", code="payment_method_required")
        customer = self._customer(session, account)
        declined = self._use_card(customer, payment, f"order-{order.id}")
        if declined is not None:
            return declined
        params: dict[str, Any] = {
            "customer": customer,
            "items": [{"plan": price.gateway_ref, "quantity": subscription.quantity}],
            "metadata": {
                "subscription_id": str(subscription.id),
                "order_id": str(order.id),
                "account_id": str(account.id),
            },
            "expand": ["latest_invoice"],  # its payment: _invoice_intent
        }
        if subscription.trial_days > 0:
            params["trial_period_days"] = subscription.trial_days
        tax_rates: list[str] = []
        if _taxed(subscription):
            # The quote's rate on every invoice, so Stripe charges the tax the buyer was shown.
            label = billing.settings.tax_label
            tax_rates = [self._tax_rate(session, subscription.tax_rate, label)]
            params["default_tax_rates"] = tax_rates
        discount_item = None
        if order.discount_minor > 0:
            # The coupon's discount on the first invoice: a negative line with the same tax
            # rate, which the subscription's first invoice takes in.
            discount_item = self._discount_item(
                customer=customer,
                amount=order.discount_minor,
                currency=order.currency,
                code=order.coupon_code or "",
                tax_rates=tax_rates,
                metadata={"order_id": str(order.id), "subscription_id": str(subscription.id)},
                key=f"order-{order.id}-discount",
            )
        try:
            sub = self.v1.subscriptions.create(
                cast(Any, params), options=idempotent(f"order-{order.id}-subscription")
            )
        except stripe.StripeError as exc:
            if discount_item is not None:
                self._drop_pending_item(discount_item)  # never left for a later invoice
            if isinstance(exc, stripe.CardError):
                return _declined(exc)
            raise GatewayError(str(exc)) from exc
        # dig, not .get: a StripeObject is not a dict (and localstripe expands this field).
        invoice = dig(sub, "latest_invoice")
        refs: dict[str, Any] = {"subscription_ref": sub.id, "invoice_ref": obj_id(invoice)}
        if sub["status"] in ("active", "trialing"):
            return Outcome("succeeded", **refs)
        _, pi = self._invoice_intent(invoice, full=True)
        if pi is not None:
            outcome = self._intent_outcome(pi, **refs)
        else:
            outcome = Outcome(
                "failed",
                message="The first payment did not go through.",
                code="payment_failed",
                **refs,
            )
        if outcome.status == "failed":
            self._cancel_quietly(sub.id)
        return outcome

    def _invoice_intent(self, invoice: Any, *, full: bool) -> tuple[str | None, Any]:
        """The PaymentIntent of a subscription's new invoice: its id and, for ``full``, the
        object (status, client secret, refusal). Old shape: the invoice's ``payment_intent``
        (localstripe expands it); new shape: its InvoicePayments. Subscriptions are created
        with ``expand=["latest_invoice"]`` only: Stripe refuses to expand
        ``latest_invoice.payment_intent`` at the pinned version, and localstripe refuses
        ``latest_invoice.payments`` after it made the subscription."""
        pi = dig(invoice, "payment_intent")
        if pi is not None and not isinstance(pi, str):
            return obj_id(pi), pi
        ref, invoice_ref = obj_id(pi), obj_id(invoice)
        try:
            if ref is None and invoice_ref is not None:
                ref = self.invoice_payment_ref(invoice_ref)
            if ref is None or not full:
                return ref, None
            with _asking():
                return ref, self.v1.payment_intents.retrieve(ref)
        except GatewayError as exc:
            log.warning("the payment of invoice %s could not be read: %s", invoice_ref, exc)
            return ref, None

    def _discount_item(
        self,
        *,
        customer: str,
        amount: int,
        currency: str,
        code: str,
        tax_rates: list[str],
        metadata: dict[str, str],
        key: str,
        subscription: str | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "customer": customer,
            "amount": -amount,
            "currency": currency,
            "description": f"Coupon {code}".strip(),
            "metadata": {**metadata, "coupon": code},
        }
        if tax_rates:
            params["tax_rates"] = tax_rates
        if subscription is not None:
            params["subscription"] = subscription
        with _asking():
            item = self.v1.invoice_items.create(cast(Any, params), options=idempotent(key))
        return str(item.id)

    def _drop_pending_item(self, ref: str) -> None:
        try:
            self.v1.invoice_items.delete(ref)
        except stripe.StripeError as exc:
            log.warning("could not delete pending invoice item %s: %s", ref, exc)

    def discount_next_charge(
        self, session: Session, billing: Billing, *, subscription: Subscription, quote: Quote
    ) -> None:
        """A negative invoice item on the subscription, taken in by its next invoice (one
        per charge: the idempotency key names the charge)."""
        if quote.discount_minor <= 0 or subscription.gateway_ref is None:
            return
        customer = self._customer(session, subscription.account)
        tax_rates = []
        if _taxed(subscription):
            label = billing.settings.tax_label
            tax_rates = [self._tax_rate(session, subscription.tax_rate, label)]
        self._discount_item(
            customer=customer,
            amount=quote.discount_minor,
            currency=quote.currency,
            code=subscription.coupon_code or "",
            tax_rates=tax_rates,
            metadata={"subscription_id": str(subscription.id)},
            key=(
                f"subscription-{subscription.id}-discount-{subscription.paid_charges}"
                f"-{subscription.tier_price_id.hex if subscription.tier_price_id else ''}"
            ),
            subscription=subscription.gateway_ref,
        )

    def replace_card(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        payment: PaymentInput,
    ) -> Outcome:
        """Confirm a SetupIntent for the customer with the PaymentMethod from Stripe
        Elements; once it succeeded, attach the card and make it the default for invoices
        (the subscription's next charges and retries). A card whose bank asks for 3-D Secure
        answers ``requires_action`` with the SetupIntent (``complete_card_setup`` finishes)."""
        if not payment.payment_method:
            return Outcome("failed", message="No card was entered.", code="payment_method_required")
        customer = self._customer(session, subscription.account)
        method = payment.payment_method

        def confirm() -> Any:
            seti = self.v1.setup_intents.create(
                cast(
                    Any,
                    {
                        "customer": customer,
                        "payment_method_types": ["card"],
                        "usage": "off_session",
                        "metadata": {"subscription_id": str(subscription.id)},
                    },
                )
            )
            return self.v1.setup_intents.confirm(seti.id, {"payment_method": method})

        seti = _with_card(confirm)
        return seti if isinstance(seti, Outcome) else self._setup_outcome(customer, seti)

    def _setup_outcome(self, customer: str, seti: Any) -> Outcome:
        status = str(seti["status"])
        refs: dict[str, Any] = {"extra": {"setup_ref": seti.id}}
        if status == "succeeded":
            pm = obj_id(dig(seti, "payment_method"))
            if pm is None:
                return Outcome("failed", message="The card was not saved.", code="setup_failed")

            def use(card: str) -> None:
                self.v1.payment_methods.attach(card, {"customer": customer})
                self.v1.customers.update(
                    customer, {"invoice_settings": {"default_payment_method": card}}
                )

            declined = _with_card(lambda: use(pm))
            return declined or Outcome("succeeded", **refs)
        if status in ("requires_action", "requires_confirmation"):
            return Outcome("requires_action", client_secret=seti["client_secret"], **refs)
        if status == "processing":
            return Outcome("requires_action", **refs)
        error = dig(seti, "last_setup_error")
        return Outcome(
            "failed",
            message=str(dig(error, "message") or "The card could not be authenticated."),
            code=str(dig(error, "code") or "setup_intent_authentication_failure"),
            **refs,
        )

    def complete_card_setup(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        setup_ref: str,
        approve: bool | None = None,
    ) -> Outcome:
        """The SetupIntent's state now (the customer confirmed with Stripe.js, or not)."""
        customer = self._customer(session, subscription.account)
        with _asking():
            seti = self.v1.setup_intents.retrieve(setup_ref)
        return self._setup_outcome(customer, seti)

    def setup_client_secret(self, setup_ref: str) -> str | None:
        try:
            return str(self.v1.setup_intents.retrieve(setup_ref)["client_secret"])
        except stripe.StripeError:
            return None

    def _default_card(self, customer: str) -> str | None:
        with _asking():
            found = self.v1.customers.retrieve(customer)
        return obj_id(dig(found, "invoice_settings", "default_payment_method"))

    def _use_card(self, customer: str, payment: PaymentInput, key: str) -> Outcome | None:
        """Make ``payment`` the customer's default card; a declined card's outcome, else None."""
        if not payment.payment_method:
            return None
        method = payment.payment_method

        def use() -> None:
            pm = self.v1.payment_methods.attach(
                method, {"customer": customer}, options=idempotent(f"{key}-attach")
            )
            self.v1.customers.update(
                customer,
                {"invoice_settings": {"default_payment_method": pm.id}},
                options=idempotent(f"{key}-default-card"),
            )

        return _with_card(use)

    def change_plan(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        change: PlanChange,
        order: Order | None,
        price: TierPrice,
        payment: PaymentInput,
    ) -> Outcome:
        """Stripe's own proration is not used (localstripe cannot take
        ``proration_behavior``): the store charges what it computed.

        - Same interval: what is due now is a PaymentIntent on the customer's default card;
          once it succeeded the subscription's item moves to the new plan, the proration
          items the gateway made for that are deleted, and a credit left over is a negative
          invoice item the next invoice takes in.
        - New interval (a new period from now): a new subscription on the new plan whose
          first invoice takes the credit as a negative item; once it is paid the old one is
          canceled. A declined first invoice cancels the new one and keeps the old.
        """
        assert subscription.gateway_ref is not None and price.gateway_ref is not None
        customer = self._customer(session, subscription.account)
        key = f"subscription-{subscription.id}-change-{change.key}"
        declined = self._use_card(customer, payment, key)
        if declined is not None:
            return declined
        tax_rates: list[str] = []
        if _taxed(subscription):
            tax_rates = [self._tax_rate(session, subscription.tax_rate, billing.settings.tax_label)]
        if change.interval_change:
            return self._restart(subscription, change, order, price, customer, tax_rates, key)
        outcome = Outcome("succeeded")
        if order is not None:
            outcome = self._charge(order, change, customer, key)
            if outcome.status != "succeeded":
                return outcome
        try:
            self._switch_item(subscription, price, customer, key)
            # The old plan's coupon line for the next invoice: the store makes the new
            # plan's (``discount_next_charge``) once the change is applied.
            self._take_coupon_lines(customer, subscription.gateway_ref)
            if change.carried_net_minor > 0:
                self._credit_item(
                    customer, change, tax_rates, key, subscription=subscription.gateway_ref
                )
        except GatewayError:
            if outcome.payment_ref:  # the charge must not stay without the plan it paid for
                self._refund_quietly(outcome.payment_ref, key)
            raise
        return outcome

    def _charge(self, order: Order, change: PlanChange, customer: str, key: str) -> Outcome:
        card = self._default_card(customer)
        if card is None:
            return Outcome("failed", message="There is no card to charge: add one.", code="no_card")
        params: dict[str, Any] = {
            "amount": order.total_minor,
            "currency": order.currency,
            "customer": customer,
            "payment_method": card,
            "payment_method_types": ["card"],
            "confirm": True,
            "off_session": True,
            "metadata": {
                "order_id": str(order.id),
                "plan_change_id": str(change.id),
                "subscription_id": str(order.subscription_id),
            },
        }
        pi = _with_card(
            lambda: self.v1.payment_intents.create(
                cast(Any, params), options=idempotent(f"{key}-payment")
            ),
            intent=True,
        )
        if isinstance(pi, Outcome):
            return pi
        outcome = self._intent_outcome(pi)
        if outcome.status == "requires_action":
            # Nobody is on the page to authenticate an off-session charge: it is not made.
            self._cancel_intent_quietly(pi.id)
            return Outcome(
                "failed",
                payment_ref=pi.id,
                message="Your bank asks to confirm this payment: replace the card, then "
                "change the plan again.",
                code="authentication_required",
            )
        return outcome

    def _switch_item(
        self, subscription: Subscription, price: TierPrice, customer: str, key: str
    ) -> None:
        assert subscription.gateway_ref is not None
        with _asking():
            current = self.v1.subscriptions.retrieve(subscription.gateway_ref)
            item = dig(current, "items", "data", 0, "id")
            self.v1.subscriptions.update(
                subscription.gateway_ref,
                cast(
                    Any,
                    {
                        "items": [
                            {
                                "id": item,
                                "plan": price.gateway_ref,
                                "quantity": subscription.quantity,
                            }
                        ]
                    },
                ),
                options=idempotent(f"{key}-switch"),
            )
            # The gateway's own proration lines for the switch: the store charged it already.
            for pending in self.v1.invoice_items.list({"customer": customer, "limit": 100}):
                if (
                    dig(pending, "proration")
                    and obj_id(dig(pending, "invoice")) is None
                    and item_subscription(pending) == subscription.gateway_ref
                ):
                    self.v1.invoice_items.delete(pending.id)

    def _credit_item(
        self,
        customer: str,
        change: PlanChange,
        tax_rates: list[str],
        key: str,
        *,
        subscription: str | None,
        amount: int | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "customer": customer,
            "amount": -(change.carried_net_minor if amount is None else amount),
            "currency": change.currency,
            "description": f"Credit for unused time on {change.from_tier.name}",
            "metadata": {"plan_change_id": str(change.id)},
        }
        if tax_rates:
            params["tax_rates"] = tax_rates
        if subscription is not None:
            params["subscription"] = subscription
        with _asking():
            item = self.v1.invoice_items.create(
                cast(Any, params), options=idempotent(f"{key}-credit")
            )
        return str(item.id)

    def _restart(
        self,
        subscription: Subscription,
        change: PlanChange,
        order: Order | None,
        price: TierPrice,
        customer: str,
        tax_rates: list[str],
        key: str,
    ) -> Outcome:
        assert subscription.gateway_ref is not None
        # The old subscription's coupon line must not land on the new one's first invoice
        # (localstripe takes any pending line of the customer); put back if this fails.
        old_lines = self._take_coupon_lines(customer, subscription.gateway_ref)
        made: list[str] = []
        if change.credit_net_minor > 0:
            made.append(
                self._credit_item(
                    customer,
                    change,
                    tax_rates,
                    key,
                    subscription=None,
                    amount=change.credit_net_minor,
                )
            )
        # The coupon's discount on the new period, as the quote took it off the charge.
        discount = price.amount_minor * subscription.quantity - change.charge_net_minor
        if discount > 0:
            made.append(
                self._discount_item(
                    customer=customer,
                    amount=discount,
                    currency=change.currency,
                    code=subscription.coupon_code or "",
                    tax_rates=tax_rates,
                    metadata={"subscription_id": str(subscription.id)},
                    key=f"{key}-discount",
                )
            )

        def undo() -> None:
            for ref in made:
                self._drop_pending_item(ref)
            self._restore_lines(customer, old_lines, key)

        params: dict[str, Any] = {
            "customer": customer,
            "items": [{"plan": price.gateway_ref, "quantity": subscription.quantity}],
            "metadata": {
                "subscription_id": str(subscription.id),
                "plan_change_id": str(change.id),
                "account_id": str(subscription.account_id),
            },
            "expand": ["latest_invoice"],  # its payment: _invoice_intent
        }
        if order is not None:
            params["metadata"]["order_id"] = str(order.id)
        if tax_rates:
            params["default_tax_rates"] = tax_rates
        try:
            new = self.v1.subscriptions.create(
                cast(Any, params), options=idempotent(f"{key}-subscription")
            )
        except stripe.StripeError as exc:
            undo()
            if isinstance(exc, stripe.CardError):
                return _declined(exc)
            raise GatewayError(str(exc)) from exc
        invoice = dig(new, "latest_invoice")
        active = new["status"] == "active"
        payment_ref, pi = self._invoice_intent(invoice, full=not active)
        refs: dict[str, Any] = {
            "subscription_ref": new.id,
            "invoice_ref": obj_id(invoice),
            "payment_ref": payment_ref,
        }
        if not active:
            self._cancel_quietly(new.id)
            self._restore_lines(customer, old_lines, key)
            outcome = self._intent_outcome(pi) if pi is not None else None
            return Outcome(
                "failed",
                message=(outcome.message if outcome else "") or "The payment failed.",
                code=(outcome.code if outcome else None) or "payment_failed",
                decline_code=outcome.decline_code if outcome else None,
                **refs,
            )
        try:
            self.v1.subscriptions.cancel(subscription.gateway_ref)
        except stripe.StripeError as exc:
            # Paid and running on the new plan: the old one must not renew as well.
            log.error(
                "could not cancel replaced subscription %s: %s", subscription.gateway_ref, exc
            )
        total, tax = invoice_amounts(invoice)
        return Outcome("succeeded", extra={"charged": (total, tax)}, **refs)

    def _take_coupon_lines(self, customer: str, subscription_ref: str) -> list[dict[str, Any]]:
        """Delete the coupon lines waiting for the subscription's next invoice; answers what
        they were (to put back)."""
        taken = []
        with _asking():
            for pending in self.v1.invoice_items.list({"customer": customer, "limit": 100}):
                if (
                    obj_id(dig(pending, "invoice")) is None
                    and item_subscription(pending) == subscription_ref
                    and dig(pending, "metadata", "coupon") is not None
                ):
                    taken.append(_plain(pending))
                    self.v1.invoice_items.delete(pending.id)
        return taken

    def _restore_lines(self, customer: str, lines: list[dict[str, Any]], key: str) -> None:
        for i, line in enumerate(lines):
            params: dict[str, Any] = {
                "customer": customer,
                "amount": line["amount"],
                "currency": line["currency"],
                "description": line.get("description") or "",
                "metadata": dict(line.get("metadata") or {}),
                "subscription": item_subscription(line),
            }
            rates = [obj_id(r) for r in line.get("tax_rates") or []]
            if rates:
                params["tax_rates"] = rates
            try:
                self.v1.invoice_items.create(
                    cast(Any, params), options=idempotent(f"{key}-restore-{i}")
                )
            except stripe.StripeError as exc:
                log.error("could not restore coupon line %s: %s", line.get("id"), exc)

    def _refund_quietly(self, payment_ref: str, key: str) -> None:
        try:
            self.v1.refunds.create(
                {"payment_intent": payment_ref}, options=idempotent(f"{key}-undo")
            )
        except stripe.StripeError as exc:
            log.error("could not refund %s of a plan change that failed: %s", payment_ref, exc)

    def _cancel_intent_quietly(self, ref: str) -> None:
        try:
            self.v1.payment_intents.cancel(ref)
        except stripe.StripeError as exc:
            log.warning("could not cancel payment %s: %s", ref, exc)

    def retry_invoice(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        order: Order,
        payment: PaymentInput | None,
    ) -> tuple[Outcome, dict[str, Any] | None]:
        """Pay the open invoice now with the customer's default card."""
        assert order.gateway_ref is not None
        ref = order.gateway_ref
        invoice = _with_card(lambda: self.v1.invoices.pay(ref))
        if isinstance(invoice, Outcome):
            return invoice, None
        if invoice["status"] != "paid":
            return Outcome("failed", message="The payment failed.", code="payment_failed"), None
        return Outcome("succeeded"), _plain(invoice)

    def _cancel_quietly(self, ref: str) -> None:
        try:
            self.v1.subscriptions.cancel(ref)
        except stripe.StripeError as exc:
            log.warning("could not cancel incomplete subscription %s: %s", ref, exc)

    def set_cancel_at_period_end(
        self, session: Session, billing: Billing, *, subscription: Subscription, cancel: bool
    ) -> dict[str, Any] | None:
        assert subscription.gateway_ref
        with _asking():
            sub = self.v1.subscriptions.update(
                subscription.gateway_ref, {"cancel_at_period_end": cancel}
            )
        return _plain(sub)

    def cancel_now(
        self, session: Session, billing: Billing, *, subscription: Subscription
    ) -> dict[str, Any] | None:
        assert subscription.gateway_ref
        with _asking():
            try:
                return _plain(self.v1.subscriptions.cancel(subscription.gateway_ref))
            except stripe.InvalidRequestError as exc:
                # Already canceled (another process, the dashboard): the current object says so.
                current = self.fetch_subscription(subscription.gateway_ref)
                ended = dig(current, "status") in ("canceled", "incomplete_expired")
                if current is not None and ended:
                    return current
                raise GatewayError(str(exc)) from exc

    def fetch_payment(self, ref: str) -> dict[str, Any] | None:
        with _asking():
            try:
                return _plain(self.v1.payment_intents.retrieve(ref))
            except stripe.InvalidRequestError:
                return None

    def fetch_invoice(self, ref: str) -> dict[str, Any] | None:
        with _asking():
            try:
                return _plain(self.v1.invoices.retrieve(ref))
            except stripe.InvalidRequestError:
                return None

    def fetch_subscription(self, ref: str) -> dict[str, Any] | None:
        with _asking():
            try:
                return _plain(self.v1.subscriptions.retrieve(ref))
            except stripe.InvalidRequestError:
                return None  # not at this Stripe account (or a hand-made event): use the payload

    def invoice_payment_ref(self, invoice_ref: str) -> str | None:
        """The new shape's InvoicePayments of the invoice; where the API has none (localstripe,
        the old shape) the invoice's own ``payment_intent``."""
        with _asking():
            try:
                found = self.v1.invoice_payments.list({"invoice": invoice_ref, "limit": 100})
            except stripe.StripeError as exc:
                if not _no_such_route(exc):
                    raise
            else:
                return paid_by(found.data)
            try:
                return payment_in_invoice(self.v1.invoices.retrieve(invoice_ref))
            except stripe.InvalidRequestError:
                return None

    def payment_invoice_ref(self, payment_ref: str) -> str | None:
        """The invoice of the new shape's InvoicePayment for the PaymentIntent; where the API
        has none (localstripe, the old shape) the PaymentIntent's own ``invoice``."""
        with _asking():
            try:
                found = self.v1.invoice_payments.list(
                    {"payment": {"type": "payment_intent", "payment_intent": payment_ref}}
                )
            except stripe.StripeError as exc:
                if not _no_such_route(exc):
                    raise
            else:
                return next((obj_id(dig(p, "invoice")) for p in found.data), None)
            try:
                return obj_id(dig(self.v1.payment_intents.retrieve(payment_ref), "invoice"))
            except stripe.InvalidRequestError:
                return None

    # --- refunds and status -------------------------------------------------------------

    def refund(
        self, session: Session, billing: Billing, *, order: Order, amount_minor: int
    ) -> int | None:
        if not order.payment_ref:
            raise GatewayError("this order has no payment to refund")
        try:
            # One key per refund step: the amount refunded before it and its own amount.
            key = f"order-{order.id}-refund-{order.refunded_minor}-{amount_minor}"
            refund = self.v1.refunds.create(
                {"payment_intent": order.payment_ref, "amount": amount_minor},
                options=idempotent(key),
            )
        except stripe.StripeError as exc:
            raise GatewayError(exc.user_message or str(exc)) from exc
        if refund["status"] == "pending":
            return None  # applied when Stripe's charge.refunded event arrives
        if refund["status"] != "succeeded":
            raise GatewayError(f"the refund is {refund['status']}")
        try:
            pi = self.v1.payment_intents.retrieve(order.payment_ref, {"expand": ["latest_charge"]})
            refunded = dig(pi, "latest_charge", "amount_refunded")
            if isinstance(refunded, int):
                return refunded
        except stripe.StripeError as exc:
            log.warning("could not read the refunded total of %s: %s", order.payment_ref, exc)
        return order.refunded_minor + amount_minor

    def payment_status(self, order: Order) -> str | None:
        if not order.payment_ref:
            return None
        try:
            return str(self.v1.payment_intents.retrieve(order.payment_ref)["status"])
        except stripe.StripeError:
            return None

    def client_secret(self, order: Order) -> str | None:
        if not order.payment_ref:
            return None
        try:
            return str(self.v1.payment_intents.retrieve(order.payment_ref)["client_secret"])
        except stripe.StripeError:
            return None
