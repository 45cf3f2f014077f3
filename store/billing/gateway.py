"""The payment gateway interface: Stripe in production, the built-in test gateway otherwise.

Gateways start payments and subscriptions and answer questions about them; they never change
orders, subscriptions or entitlements themselves. Those change only when an event is
processed (``store.billing.webhooks.process_event``): Stripe's webhooks, or the events the
test gateway makes in the same shape, so both run the same lifecycle code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from store.errors import Conflict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from store.accounts.models import Account
    from store.billing.models import Order, PlanChange, Subscription, TierPrice
    from store.billing.pricing import Quote
    from store.billing.runtime import Billing
    from store.catalog.models import Tier


class GatewayError(Exception):
    """The gateway could not be reached or refused a request for reasons not the buyer's."""


@contextmanager
def refusal_is_conflict() -> Iterator[None]:
    """Around a request the customer made of the gateway (cancel, confirm a card, pay now,
    change plan): its GatewayError is the client's 409 ``gateway_error``."""
    try:
        yield
    except GatewayError as exc:
        raise Conflict(f"The payment service refused: {exc}", code="gateway_error") from exc


@dataclass(frozen=True)
class PaymentInput:
    """What the checkout form sent: a Stripe PaymentMethod id, or a test card number."""

    payment_method: str | None = None
    card_number: str | None = None


@dataclass
class Outcome:
    """The gateway's immediate answer. Not the source of truth: events are."""

    # succeeded | processing | requires_action | failed
    status: str
    payment_ref: str | None = None  # PaymentIntent id
    invoice_ref: str | None = None  # first invoice of a subscription
    subscription_ref: str | None = None
    client_secret: str | None = None  # for Stripe.js to finish authentication
    message: str = ""
    # A failure's code as Stripe names it (card_declined, incorrect_number, ...) and the
    # issuer's decline code (generic_decline, insufficient_funds, ...) when there is one.
    code: str | None = None
    decline_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class PaymentGateway(Protocol):
    name: str  # "stripe" | "test"
    test_mode: bool
    publishable_key: str | None

    def sync_price(self, session: Session, *, tier: Tier, price: TierPrice) -> str | None:
        """Create the gateway's product and price for ``price``; returns the price's ref."""
        ...

    def pay_once(
        self, session: Session, billing: Billing, *, order: Order, payment: PaymentInput
    ) -> Outcome: ...

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
    ) -> Outcome: ...

    def discount_next_charge(
        self, session: Session, billing: Billing, *, subscription: Subscription, quote: Quote
    ) -> None:
        """Take a coupon's discount (``quote.discount_minor``, with its tax) off the
        subscription's next invoice."""
        ...

    def replace_card(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        payment: PaymentInput,
    ) -> Outcome:
        """Make ``payment`` the card of the subscription's customer (its next charges).

        ``requires_action``: the bank asks the customer to confirm the card (3-D Secure);
        ``extra["setup_ref"]`` names the pending setup (and ``client_secret`` is for
        Stripe.js). It becomes the card only through ``complete_card_setup``."""
        ...

    def complete_card_setup(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        setup_ref: str,
        approve: bool | None = None,
    ) -> Outcome:
        """Finish a card setup that needed the customer's confirmation: ``succeeded`` (the
        card is now the customer's default), ``requires_action`` (not confirmed yet) or
        ``failed``. ``approve`` is the test gateway's simulated answer."""
        ...

    def setup_client_secret(self, setup_ref: str) -> str | None:
        """The client secret Stripe.js needs to show the bank's confirmation step."""
        ...

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
        """Move the subscription to ``price`` as ``change`` says: charge ``order`` (what is due
        now) with the customer's card (or ``payment``), carry ``change``'s credit to the next
        invoices, and switch the plan. ``succeeded`` only when all of it happened; otherwise
        nothing changed at the gateway. ``subscription_ref`` names a new gateway subscription
        when the gateway had to start one."""
        ...

    def retry_invoice(
        self,
        session: Session,
        billing: Billing,
        *,
        subscription: Subscription,
        order: Order,
        payment: PaymentInput | None,
    ) -> tuple[Outcome, dict[str, Any] | None]:
        """Charge the failed invoice of ``order`` again; the paid invoice when it worked."""
        ...

    def set_cancel_at_period_end(
        self, session: Session, billing: Billing, *, subscription: Subscription, cancel: bool
    ) -> dict[str, Any] | None:
        """Returns the gateway's fresh subscription object when it has one."""
        ...

    def cancel_now(
        self, session: Session, billing: Billing, *, subscription: Subscription
    ) -> dict[str, Any] | None: ...

    def refund(
        self, session: Session, billing: Billing, *, order: Order, amount_minor: int
    ) -> int | None:
        """Refund; returns the payment's total refunded so far when the gateway says it."""
        ...

    def payment_status(self, order: Order) -> str | None:
        """The gateway's current status of the order's payment (for pages; no state change)."""
        ...

    def fetch_payment(self, ref: str) -> dict[str, Any] | None:
        """The gateway's current PaymentIntent, or None (not supported or unknown)."""
        ...

    def fetch_invoice(self, ref: str) -> dict[str, Any] | None:
        """The gateway's current invoice, or None (not supported or unknown)."""
        ...

    def fetch_subscription(self, ref: str) -> dict[str, Any] | None:
        """The gateway's current subscription object, or None (not supported or unknown)."""
        ...

    def invoice_payment_ref(self, invoice_ref: str) -> str | None:
        """The PaymentIntent that paid (or is paying) the invoice, or None (no payment, or the
        gateway cannot say). GatewayError when the gateway could not be asked."""
        ...

    def payment_invoice_ref(self, payment_ref: str) -> str | None:
        """The invoice a PaymentIntent paid, or None (not an invoice's payment, or the
        gateway cannot say). GatewayError when the gateway could not be asked."""
        ...


def obj_id(value: Any) -> str | None:
    """An expandable field as an id: localstripe expands some fields real Stripe leaves as ids."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("id")
    return getattr(value, "id", None)


def refused(
    error: Any, *, message: str = "The payment failed.", code: str = "payment_failed", **refs: Any
) -> Outcome:
    """A payment the gateway refused, from its error as Stripe shapes it (``message``,
    ``code``, ``decline_code``; a dict or a StripeObject, or None): ``message`` and ``code``
    stand in for what it lacks. The one mapping of a refusal for every gateway."""
    decline_code = dig(error, "decline_code")
    return Outcome(
        "failed",
        message=str(dig(error, "message") or message),
        code=str(dig(error, "code") or code),
        decline_code=str(decline_code) if decline_code else None,
        **refs,
    )


def dig(obj: Any, *path: str | int) -> Any:
    """``obj[a][b]...`` or None when any step is missing (plain dicts, StripeObjects alike)."""
    for key in path:
        if obj is None:
            return None
        try:
            obj = obj[key]
        except (KeyError, TypeError, IndexError, AttributeError):
            return None
    return obj
