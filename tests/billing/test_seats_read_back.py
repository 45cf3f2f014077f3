"""Seats changed at the gateway (Stripe's dashboard) are read back from its events: a
decrease applies at once, an increase once an invoice at that quantity is paid (in full),
and a late or out-of-order event never sets a stale quantity. The license issued for the
entitlement shows the current seats."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from store.billing import orders, webhooks
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.licensing import service as licenses
from store.licensing.models import Entitlement
from store.licensing.signer import LicenseSigner
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event

MONTH = 30 * 86400
UNIT = 4900  # the monthly tier's price
SEATS = 2  # its seats per unit


@pytest.fixture
def sub(session: Session, billing: Billing, shop: Shop) -> Subscription:
    """Three units of the monthly tier (6 seats), paid."""
    shop.monthly.seats = SEATS
    session.flush()
    order = orders.start_checkout(
        session, billing, account=shop.buyer, tier=shop.monthly, quantity=3
    )
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    found = session.get(Subscription, order.subscription_id)
    assert found is not None and found.quantity == 3 and found.current_period_end is not None
    return found


def _snapshot(sub: Subscription, quantity: int) -> dict[str, Any]:
    assert sub.current_period_end is not None
    end = int(sub.current_period_end.timestamp())
    return {
        "id": sub.gateway_ref,
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": False,
        "metadata": {"subscription_id": str(sub.id)},
        "items": {"data": [{"id": "si_1", "quantity": quantity, "current_period_end": end}]},
    }


def _line(quantity: int, start: int, end: int, amount: int, proration: bool) -> dict[str, Any]:
    line: dict[str, Any] = {
        "type": "invoiceitem" if proration else "subscription",
        "quantity": quantity,
        "amount": amount,
        "period": {"start": start, "end": end},
    }
    if proration:
        line["proration"] = True
    return line


def _invoice(sub: Subscription, lines: list[dict[str, Any]], paid: int) -> dict[str, Any]:
    return {
        "id": "in_" + uuid.uuid4().hex[:16],
        "object": "invoice",
        "amount_paid": paid,
        "amount_due": paid,
        "currency": "usd",
        "payment_intent": "pi_" + uuid.uuid4().hex[:16],
        "lines": {"data": lines},
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
    }


def _renewal(sub: Subscription, quantity: int, paid: int | None = None) -> dict[str, Any]:
    assert sub.current_period_end is not None
    p1 = int(sub.current_period_end.timestamp())
    line = _line(quantity, p1, p1 + MONTH, UNIT * quantity, proration=False)
    return _invoice(sub, [line], UNIT * quantity if paid is None else paid)


def _tell(
    session: Session, billing: Billing, type_: str, obj: dict[str, Any], created: int
) -> None:
    webhooks.process_event(session, billing, make_event(type_, obj, created=created))
    session.commit()
    session.expire_all()


def _seats(session: Session, sub: Subscription) -> tuple[int, int | None]:
    fresh = session.get(Subscription, sub.id)
    assert fresh is not None
    ent = session.get(Entitlement, fresh.entitlement_id)
    assert ent is not None
    return fresh.quantity, ent.seats


def test_a_decrease_applies_at_once_with_a_new_license(
    app: FastAPI, session: Session, billing: Billing, sub: Subscription
) -> None:
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.seats == 6
    keyring, settings = app.state.keyring, app.state.settings
    billing.signer = LicenseSigner(keyring, settings)  # as the app's runtime has it
    first = licenses.current_license(session, keyring, settings, ent)
    session.commit()
    now = int(time.time())
    _tell(session, billing, "customer.subscription.updated", _snapshot(sub, 1), now + 1)
    assert _seats(session, sub) == (1, SEATS)
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None
    documents = licenses.licenses_of(session, ent)
    assert len(documents) == 2 and documents[1].id == first.id
    assert licenses.decode_payload(documents[0].token)["seats"] == SEATS
    fresh = session.get(Subscription, sub.id)
    assert fresh is not None and fresh.amount_minor == UNIT  # the next charge: one unit


def test_an_increase_applies_once_paid(
    session: Session, billing: Billing, sub: Subscription
) -> None:
    now = int(time.time())
    _tell(session, billing, "customer.subscription.updated", _snapshot(sub, 5), now + 1)
    assert _seats(session, sub) == (3, 6)  # not paid yet
    _tell(session, billing, "invoice.paid", _renewal(sub, 5), now + 2)
    assert _seats(session, sub) == (5, 10)


def test_an_increase_paid_short_is_held(
    session: Session, billing: Billing, sub: Subscription
) -> None:
    now = int(time.time())
    _tell(session, billing, "customer.subscription.updated", _snapshot(sub, 5), now + 1)
    _tell(session, billing, "invoice.paid", _renewal(sub, 5, paid=UNIT * 3), now + 2)
    assert _seats(session, sub) == (3, 6)
    held = session.query(Order).filter(Order.subscription_id == sub.id, Order.status == "review")
    assert held.count() == 1


def test_the_paid_invoice_told_before_the_update_still_raises_the_seats(
    session: Session, billing: Billing, sub: Subscription
) -> None:
    now = int(time.time())
    renewal = _renewal(sub, 5)
    _tell(session, billing, "invoice.paid", renewal, now + 2)
    assert _seats(session, sub) == (5, 10)
    # The update that made the quantity 5, and an older one at 3, told late: nothing moves.
    _tell(session, billing, "customer.subscription.updated", _snapshot(sub, 5), now + 1)
    _tell(session, billing, "customer.subscription.updated", _snapshot(sub, 3), now)
    assert _seats(session, sub) == (5, 10)


def test_an_older_invoice_told_after_a_decrease_does_not_raise_the_seats(
    session: Session, billing: Billing, sub: Subscription
) -> None:
    now = int(time.time())
    renewal = _renewal(sub, 3)  # made before the decrease, told after it
    _tell(session, billing, "customer.subscription.updated", _snapshot(sub, 1), now + 2)
    _tell(session, billing, "invoice.paid", renewal, now + 1)
    assert _seats(session, sub) == (1, SEATS)
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at is not None
    assert int(ent.ends_at.timestamp()) == int(renewal["lines"]["data"][0]["period"]["end"])


def test_an_increase_invoiced_at_once_by_prorations(
    session: Session, billing: Billing, sub: Subscription
) -> None:
    assert sub.current_period_end is not None and sub.current_period_start is not None
    start_before, charges_before = sub.current_period_start, sub.paid_charges
    sub.credit_net_minor = 1000  # carried from a change to a cheaper plan
    session.commit()
    now = int(time.time())
    end = int(sub.current_period_end.timestamp())
    mid = now + 10
    unused = _line(3, mid, end, -UNIT * 3 // 2, proration=True)
    remaining = _line(5, mid, end, UNIT * 5 // 2, proration=True)
    prorations = _invoice(sub, [unused, remaining], UNIT * 5 // 2 - UNIT * 3 // 2)
    _tell(session, billing, "customer.subscription.updated", _snapshot(sub, 5), now + 1)
    _tell(session, billing, "invoice.paid", prorations, now + 2)
    assert _seats(session, sub) == (5, 10)
    fresh = session.get(Subscription, sub.id)
    assert fresh is not None
    # It paid for the change, not for a period: no charge counted, the period unchanged.
    assert fresh.paid_charges == charges_before
    assert fresh.current_period_start == start_before
    assert fresh.credit_net_minor == 1000  # a plan change's credit waits for the renewal
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at is not None
    assert int(ent.ends_at.timestamp()) == end
