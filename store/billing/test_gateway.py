"""The built-in test gateway: the embedded default when Stripe is not configured.

It takes Stripe's documented test card numbers and charges nothing:

=====================  ================================================
4242 4242 4242 4242    succeeds
4000 0000 0000 0002    declined (card_declined)
4000 0025 0000 3155    requires authentication: a simulated step page with approve / fail
=====================  ================================================

It answers like Stripe and then emits the events Stripe would send, in the shape of the API
version the SDK pins (``API_VERSION``: an invoice names no PaymentIntent, a charge no invoice,
the period is on the subscription's item), into ``webhooks.process_event`` in the same
transaction, so the same lifecycle code runs. Which payment paid which invoice it answers
as Stripe's ``invoice_payments`` API does (``invoice_payment_ref``). It has
no clock of its own: ``advance`` (run by the sweep) renews subscriptions whose period ended.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.billing import coupons
from store.billing.gateway import Outcome, PaymentInput, refused
from store.billing.models import GatewayCustomer, Order, PlanChange, Subscription, TierPrice
from store.billing.pricing import BillingKind, Quote
from store.billing.runtime import Billing
from store.catalog.models import Tier
from store.db import utcnow

SOURCE = "test-gateway"
API_VERSION = "2026-10-28.endive"
CARD_SUCCESS = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_AUTHENTICATE = "4000002500003155"
TEST_CARDS = (
    (CARD_SUCCESS, "Succeeds"),
    (CARD_DECLINE, "Is declined"),
    (CARD_AUTHENTICATE, "Asks for authentication (approve or fail it on the next page)"),
)
_DECLINED = "Your card was declined."


def normalize_card(value: str | None) -> str:
    return re.sub(r"[\s-]", "", value or "")


def _decline(card: str) -> dict[str, str]:
    """Stripe's error for a card that does not pay: declined, or not a test card at all."""
    if card == CARD_DECLINE:
        return {"code": "card_declined", "decline_code": "generic_decline", "message": _DECLINED}
    return {"code": "incorrect_number", "message": "Use one of the test card numbers."}


def _ref(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def _payment_of(invoice_ref: str) -> str:
    """An invoice's payment: named after it (``in_test_X`` is paid by ``pi_test_X``), so the
    gateway can say which paid which without keeping anything."""
    return "pi" + invoice_ref[2:] if invoice_ref.startswith("in_test_") else _ref("pi")


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


class TestGateway:
    """See the module docstring. Stateless: everything it needs is in the store's rows."""

    __test__ = False  # not a pytest test class
    name = "test"
    test_mode = True
    publishable_key: str | None = None

    # --- events -----------------------------------------------------------------------

    def emit(self, session: Session, billing: Billing, type_: str, obj: dict[str, Any]) -> None:
        from store.billing.webhooks import process_event

        event = {
            "id": _ref("evt"),
            "object": "event",
            "type": type_,
            "created": int(time.time()),
            "livemode": False,
            "api_version": API_VERSION,
            "data": {"object": obj},
        }
        process_event(session, billing, event, source=SOURCE)

    def _intent(self, order: Order, status: str, **extra: Any) -> dict[str, Any]:
        assert order.payment_ref is not None
        return {
            "id": order.payment_ref,
            "object": "payment_intent",
            "amount": order.total_minor,
            "currency": order.currency,
            "status": status,
            "metadata": {"order_id": str(order.id)},
            **extra,
        }

    # --- catalogue ----------------------------------------------------------------------

    def sync_price(self, session: Session, *, tier: Tier, price: TierPrice) -> str | None:
        interval = BillingKind(price.billing).interval
        if interval is None:
            return None
        return f"plan_test_{tier.id.hex[:12]}_{interval}_{price.amount_minor}{price.currency}"

    # --- one-time payments --------------------------------------------------------------

    def pay_once(
        self, session: Session, billing: Billing, *, order: Order, payment: PaymentInput
    ) -> Outcome:
        card = normalize_card(payment.card_number)
        # Refs derived from the order, as Stripe's idempotency keys: a retry reuses them.
        order.payment_ref = order.payment_ref or f"pi_test_{order.id.hex}"
        order.gateway_ref = order.gateway_ref or order.payment_ref
        session.flush()
        if card == CARD_SUCCESS:
            self.emit(
                session, billing, "payment_intent.succeeded", self._intent(order, "succeeded")
            )
            return Outcome("succeeded", payment_ref=order.payment_ref)
        if card == CARD_AUTHENTICATE:
            intent = self._intent(order, "requires_action", next_action={"type": "test_3ds"})
            self.emit(session, billing, "payment_intent.requires_action", intent)
            return Outcome("requires_action", payment_ref=order.payment_ref)
        error = _decline(card)
        self.emit(
            session,
            billing,
            "payment_intent.payment_failed",
            self._intent(order, "requires_payment_method", last_payment_error=error),
        )
        return refused(error, payment_ref=order.payment_ref)

    def authenticate(
        self, session: Session, billing: Billing, *, order: Order, approve: bool
    ) -> None:
        """The simulated authentication step: the buyer approved or failed it."""
        if order.kind == "subscription":
            sub = order.subscription
            assert sub is not None
            if approve:
                self._start_subscription(session, billing, sub, order, created=False)
            else:
                self._first_invoice_failed(session, billing, sub, order, "Authentication failed.")
                self.emit(
                    session,
                    billing,
                    "customer.subscription.deleted",
                    self._sub_obj(sub, status="incomplete_expired"),
                )
            return
        if approve:
            self.emit(
                session, billing, "payment_intent.succeeded", self._intent(order, "succeeded")
            )
        else:
            error = {
                "code": "payment_intent_authentication_failure",
                "message": "The payment could not be authenticated.",
            }
            intent = self._intent(order, "requires_payment_method", last_payment_error=error)
            self.emit(session, billing, "payment_intent.payment_failed", intent)

    # --- subscriptions ------------------------------------------------------------------

    def _customer(self, session: Session, account: Account) -> str:
        row = session.scalar(
            select(GatewayCustomer).where(
                GatewayCustomer.account_id == account.id, GatewayCustomer.gateway == self.name
            )
        )
        if row is None:
            row = GatewayCustomer(
                account_id=account.id, gateway=self.name, gateway_ref=f"cus_test_{account.id.hex}"
            )
            session.add(row)
            session.flush()
        return row.gateway_ref

    def _sub_obj(self, sub: Subscription, **changes: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": sub.gateway_ref,
            "object": "subscription",
            "status": sub.status,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "current_period_end": _ts(sub.current_period_end),
            "trial_end": _ts(sub.trial_end),
            "canceled_at": _ts(sub.canceled_at),
            "metadata": {"subscription_id": str(sub.id)},
        }
        obj.update(changes)
        # The period lives on the subscription's item.
        end = obj.pop("current_period_end")
        obj["items"] = {"data": [{"id": f"si_test_{sub.id.hex}", "current_period_end": end}]}
        return obj

    def _invoice(
        self, sub: Subscription, ref: str, *, amount: int, tax: int, start: datetime, end: datetime
    ) -> dict[str, Any]:
        return {
            "id": ref,
            "object": "invoice",
            "amount_paid": amount + tax,
            "amount_due": amount + tax,
            "total_taxes": [{"amount": tax, "tax_behavior": "exclusive"}] if tax else [],
            "currency": sub.currency,
            "period_start": _ts(start),
            "period_end": _ts(end),
            "lines": {"data": [{"period": {"start": _ts(start), "end": _ts(end)}}]},
            "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
        }

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
        card = normalize_card(payment.card_number)
        self._customer(session, account)
        sub = subscription
        sub.gateway_ref = sub.gateway_ref or f"sub_test_{sub.id.hex}"
        order.gateway_ref = order.gateway_ref or f"in_test_{order.id.hex}"
        session.flush()
        if card == CARD_SUCCESS:
            self._start_subscription(session, billing, sub, order, created=True)
            return Outcome(
                "succeeded", subscription_ref=sub.gateway_ref, invoice_ref=order.gateway_ref
            )
        self.emit(
            session,
            billing,
            "customer.subscription.created",
            self._sub_obj(sub, status="incomplete"),
        )
        if card == CARD_AUTHENTICATE:
            order.status = "requires_action"
            return Outcome(
                "requires_action", subscription_ref=sub.gateway_ref, invoice_ref=order.gateway_ref
            )
        error = _decline(card)
        self._first_invoice_failed(session, billing, sub, order, error["message"])
        return refused(error, subscription_ref=sub.gateway_ref, invoice_ref=order.gateway_ref)

    def _first_invoice_failed(
        self, session: Session, billing: Billing, sub: Subscription, order: Order, message: str
    ) -> None:
        now = utcnow()
        invoice = self._invoice(
            sub,
            order.gateway_ref or _ref("in"),
            amount=order.amount_minor,
            tax=order.tax_minor,
            start=now,
            end=now,
        )
        invoice["last_finalization_error"] = {"message": message}
        self.emit(session, billing, "invoice.payment_failed", invoice)

    def _start_subscription(
        self, session: Session, billing: Billing, sub: Subscription, order: Order, *, created: bool
    ) -> None:
        now = utcnow()
        if sub.trial_days:
            end = now + timedelta(days=sub.trial_days)
            obj = self._sub_obj(
                sub, status="trialing", trial_end=_ts(end), current_period_end=_ts(end)
            )
        else:
            end = sub.interval.add(now)
            obj = self._sub_obj(sub, status="active", current_period_end=_ts(end))
        obj["start_date"] = _ts(now)
        kind = "customer.subscription.created" if created else "customer.subscription.updated"
        self.emit(session, billing, kind, obj)
        invoice = self._invoice(
            sub,
            order.gateway_ref or _ref("in"),
            amount=order.amount_minor,
            tax=order.tax_minor,
            start=now,
            end=end,
        )
        self.emit(session, billing, "invoice.paid", invoice)

    def discount_next_charge(
        self, session: Session, billing: Billing, *, subscription: Subscription, quote: Quote
    ) -> None:
        """Nothing to send: ``advance`` charges each renewal's quote, coupon included."""

    def replace_card(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        payment: PaymentInput,
    ) -> Outcome:
        """A test card is accepted (4242…), declined, or (3155) needs the simulated
        authentication step first, as Stripe's SetupIntent would."""
        card = normalize_card(payment.card_number)
        if card == CARD_SUCCESS:
            return Outcome("succeeded")
        if card == CARD_AUTHENTICATE:
            return Outcome("requires_action", extra={"setup_ref": _ref("seti")})
        return refused(_decline(card))

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
        """Charges what is due now with the card on file (any card given decides instead, as
        for a retry); a credit is kept on the subscription and taken off the next renewals
        by ``advance``."""
        if order is None:
            return Outcome("succeeded")
        order.payment_ref = order.payment_ref or f"pi_test_{order.id.hex}"
        card = normalize_card(payment.card_number)
        if card and card != CARD_SUCCESS:
            if card == CARD_AUTHENTICATE:
                return Outcome(
                    "failed",
                    payment_ref=order.payment_ref,
                    message="Your bank asks to confirm this payment; use a card that does not.",
                    code="authentication_required",
                )
            error = _decline(card)
            return refused(error, payment_ref=order.payment_ref)
        return Outcome(
            "succeeded", payment_ref=order.payment_ref, invoice_ref=f"in_test_{order.id.hex}"
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
        if approve is None:
            return Outcome("requires_action", extra={"setup_ref": setup_ref})
        if approve:
            return Outcome("succeeded")
        return Outcome(
            "failed",
            message="The card could not be authenticated.",
            code="setup_intent_authentication_failure",
        )

    def setup_client_secret(self, setup_ref: str) -> str | None:
        return None

    def retry_invoice(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        order: Order,
        payment: PaymentInput | None,
    ) -> tuple[Outcome, dict[str, Any] | None]:
        """It keeps no card: the retry pays with the test card given (4242… succeeds)."""
        outcome = self.replace_card(
            session, billing, subscription=subscription, payment=payment or PaymentInput()
        )
        if outcome.status != "succeeded":
            return outcome, None
        sub = subscription
        now = utcnow()
        end = sub.current_period_end
        if end is None or end <= now:
            end = sub.interval.add(now)
        assert order.gateway_ref is not None
        invoice = self._invoice(
            sub,
            order.gateway_ref,
            amount=order.amount_minor,
            tax=order.tax_minor,
            start=now,
            end=end,
        )
        return outcome, invoice

    def set_cancel_at_period_end(
        self, session: Session, billing: Billing, *, subscription: Subscription, cancel: bool
    ) -> dict[str, Any] | None:
        self.emit(
            session,
            billing,
            "customer.subscription.updated",
            self._sub_obj(subscription, cancel_at_period_end=cancel),
        )
        return None

    def cancel_now(
        self, session: Session, billing: Billing, *, subscription: Subscription
    ) -> dict[str, Any] | None:
        self.emit(
            session,
            billing,
            "customer.subscription.deleted",
            self._sub_obj(subscription, status="canceled", canceled_at=int(time.time())),
        )
        return None

    def advance(self, session: Session, billing: Billing, now: datetime) -> int:
        """The demo clock: renew (or end) test subscriptions whose period is over."""
        due = session.scalars(
            select(Subscription).where(
                Subscription.gateway == self.name,
                Subscription.status.in_(("active", "trialing")),
                Subscription.current_period_end <= now,
            )
        ).all()
        renewed = 0
        for sub in due:
            assert sub.current_period_end is not None
            if sub.cancel_at_period_end:
                self.emit(
                    session,
                    billing,
                    "customer.subscription.deleted",
                    self._sub_obj(sub, status="canceled", canceled_at=int(time.time())),
                )
                continue
            start = sub.current_period_end
            end = sub.interval.add(start)
            while end <= now:
                start, end = end, sub.interval.add(end)
            self.emit(
                session,
                billing,
                "customer.subscription.updated",
                self._sub_obj(sub, status="active", current_period_end=_ts(end)),
            )
            charge = coupons.next_charge(sub, tax_label=billing.settings.tax_label, when=start)
            # A plan change's credit is taken off (the invoice's event then books it as used).
            credit_net = min(sub.credit_net_minor, charge.net_minor)
            credit_tax = min(sub.credit_tax_minor, charge.tax_minor)
            invoice = self._invoice(
                sub,
                _ref("in"),
                amount=charge.net_minor - credit_net,
                tax=charge.tax_minor - credit_tax,
                start=start,
                end=end,
            )
            self.emit(session, billing, "invoice.paid", invoice)
            renewed += 1
        return renewed

    # --- refunds and status -------------------------------------------------------------

    def refund(
        self, session: Session, billing: Billing, *, order: Order, amount_minor: int
    ) -> int | None:
        charge = {
            "id": _ref("ch"),
            "object": "charge",
            "amount": order.total_minor,
            "amount_refunded": order.refunded_minor + amount_minor,
            "refunded": order.refunded_minor + amount_minor >= order.total_minor,
            "payment_intent": order.payment_ref,
        }
        self.emit(session, billing, "charge.refunded", charge)
        return None

    def payment_status(self, order: Order) -> str | None:
        return None

    def fetch_subscription(self, ref: str) -> dict[str, Any] | None:
        return None

    # Its events are emitted in the checkout's own transaction: nothing to catch up on.
    def fetch_payment(self, ref: str) -> dict[str, Any] | None:
        return None

    def fetch_invoice(self, ref: str) -> dict[str, Any] | None:
        return None

    def invoice_payment_ref(self, invoice_ref: str) -> str | None:
        return _payment_of(invoice_ref) if invoice_ref.startswith("in_test_") else None

    def payment_invoice_ref(self, payment_ref: str) -> str | None:
        return "in" + payment_ref[2:] if payment_ref.startswith("pi_test_") else None
