"""Stripe's two API shapes, read in one place: which payment paid an invoice, which invoice a
payment paid, and which subscription an invoice item belongs to.

The SDK pins API version 2026-10-28.endive, so Stripe answers (and, for an endpoint made at
that version, sends events) in the new shape; localstripe answers in the 2017 one.

What moved (old shape → new shape):
- an invoice's payment: ``invoice.payment_intent`` → its InvoicePayments (``invoice.payments``
  only when expanded, never in events; else the ``invoice_payments`` API);
- a charge's invoice: ``charge.invoice`` → nowhere on the charge or its PaymentIntent (the
  ``invoice_payments`` API, by PaymentIntent);
- an invoice's or invoice item's subscription: ``subscription`` →
  ``parent.subscription_details.subscription``;
- a subscription's period: ``current_period_*`` → on its items.

Each reader takes the payload's field when it is there, else the new shape's place in the
payload, else asks the gateway (``invoice_payment_ref`` / ``payment_invoice_ref``), which
answers from whichever shape it speaks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from store.billing.gateway import GatewayError, dig, obj_id

if TYPE_CHECKING:
    from store.billing.runtime import Billing

log = logging.getLogger("store.billing")

# An InvoicePayment's status, best first: the payment that paid, then one in progress.
_RANK = {"paid": 0, "open": 1}


def paid_by(payments: Iterable[Any]) -> str | None:
    """The PaymentIntent among an invoice's InvoicePayments: the one that paid it, else the
    one in progress (a first invoice waiting for 3-D Secure), else the default one."""
    best: tuple[int, str] | None = None
    for payment in payments:
        ref = obj_id(dig(payment, "payment", "payment_intent"))
        if not ref:
            continue
        rank = _RANK.get(str(dig(payment, "status")), 3 if not dig(payment, "is_default") else 2)
        if best is None or rank < best[0]:
            best = (rank, ref)
    return best[1] if best else None


def payment_in_invoice(invoice: Any) -> str | None:
    """The PaymentIntent of an invoice as far as the object itself says (either shape)."""
    return obj_id(dig(invoice, "payment_intent")) or paid_by(dig(invoice, "payments", "data") or [])


def invoice_payment(billing: Billing, invoice: Any, *, required: bool = False) -> str | None:
    """The PaymentIntent that paid ``invoice``: from the object, else from the gateway.

    None when nothing was charged, or the gateway has no payment for it. A gateway that
    could not be asked: None, logged (``required``: its GatewayError is raised)."""
    ref = payment_in_invoice(invoice)
    invoice_ref = obj_id(dig(invoice, "id"))
    if ref or not invoice_ref:
        return ref
    if not required and int(dig(invoice, "amount_paid") or 0) == 0:
        return None  # a trial start or an invoice the credit covered: no payment
    try:
        return billing.gateway.invoice_payment_ref(invoice_ref)
    except GatewayError as exc:
        if required:
            raise
        log.warning("the payment of invoice %s is not known yet: %s", invoice_ref, exc)
        return None


def charge_invoice(billing: Billing, charge: Any) -> str | None:
    """The invoice a charge (or a dispute's charge) paid, if any: ``charge.invoice`` in the
    old shape, else the gateway's answer for its PaymentIntent. GatewayError when it could
    not be asked."""
    ref = obj_id(dig(charge, "invoice"))
    if ref:
        return ref
    payment_ref = obj_id(dig(charge, "payment_intent"))
    if not payment_ref:
        return None
    return billing.gateway.payment_invoice_ref(payment_ref)


def item_subscription(item: Any) -> str | None:
    """The subscription an invoice item is for (old shape or new)."""
    return obj_id(
        dig(item, "parent", "subscription_details", "subscription") or dig(item, "subscription")
    )
