"""Hand-signed Stripe events: what localstripe cannot send, and delivery going wrong."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.audit.models import AuditEvent
from store.billing import orders, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.db import utcnow
from store.errors import Conflict
from store.idempotency import ProcessedEvent
from store.licensing import service as licenses
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event, sign
from tests.factories import make_account


def pending_order(session: Session, billing: Billing, shop: Shop) -> Order:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time)
    session.commit()
    return order


def intent(order: Order, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "id": "pi_hand_" + order.id.hex[:12],
        "object": "payment_intent",
        "amount": order.total_minor,
        "currency": order.currency,
        "status": status,
        "metadata": {"order_id": str(order.id)},
        **extra,
    }


def fresh(session: Session, obj: Any) -> Any:
    session.expire_all()
    return session.get(type(obj), obj.id)


# --- signatures and bodies ---------------------------------------------------------------


def test_signature_problems_are_400(client: TestClient, billing: Billing) -> None:
    event = make_event("payment_intent.succeeded", {"id": "pi_x", "metadata": {}})
    r = post_event(client, event, secret="whsec_wrong")
    assert r.status_code == 400 and r.json()["error"] == "bad_signature" and r.json()["detail"]
    r = post_event(client, event, t=int(time.time()) - 301)
    assert r.status_code == 400 and r.json()["error"] == "stale_signature"
    r = post_event(client, event, signature="")
    assert r.status_code == 400 and r.json()["error"] == "bad_signature"
    r = post_event(client, event, signature="garbage")
    assert r.status_code == 400
    r = post_event(client, "this is not json")
    assert r.status_code == 400 and r.json()["error"] == "malformed_event"
    r = post_event(client, '{"id": "evt_1", "type": "x"}')
    assert r.status_code == 400 and r.json()["error"] == "malformed_event"
    # None of them was recorded.
    assert client.app.state.sessionmaker().scalar(select(func.count(ProcessedEvent.id))) == 0  # type: ignore[attr-defined]


def test_tolerance_is_configurable(client: TestClient, billing: Billing) -> None:
    billing.settings.webhook_tolerance = 3600
    event = make_event("something.unknown", {"id": "x"})
    r = post_event(client, event, t=int(time.time()) - 1800)
    assert r.status_code == 200 and r.json()["status"] == "ignored"


def test_unknown_event_types_are_ignored(client: TestClient, billing: Billing) -> None:
    r = post_event(client, make_event("customer.created", {"id": "cus_1"}))
    assert r.status_code == 200 and r.json()["status"] == "ignored"


def test_webhooks_off_without_secret(client: TestClient, billing: Billing) -> None:
    billing.settings.stripe_webhook_secret = None
    r = post_event(client, make_event("customer.created", {"id": "cus_1"}))
    assert r.status_code == 404 and r.json()["error"] == "webhooks_disabled"


# --- one-time payments --------------------------------------------------------------------


def test_duplicate_delivery_acts_once(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    event = make_event("payment_intent.succeeded", intent(order))
    first, second = post_event(client, event), post_event(client, event)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["status"], second.json()["status"]) == ("processed", "duplicate")
    order = fresh(session, order)
    assert order.status == "paid" and order.payment_ref == "pi_hand_" + order.id.hex[:12]
    count = session.scalar(
        select(func.count(Entitlement.id)).where(Entitlement.source_ref == str(order.id))
    )
    assert count == 1


def test_older_failure_after_success_changes_nothing(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    now = int(time.time())
    ok = make_event("payment_intent.succeeded", intent(order), created=now)
    failed = make_event(
        "payment_intent.payment_failed",
        intent(order, "requires_payment_method", last_payment_error={"message": "Declined"}),
        created=now - 5,
    )
    assert post_event(client, ok).json()["status"] == "processed"
    assert post_event(client, failed).json()["status"] == "processed"
    order = fresh(session, order)
    assert order.status == "paid" and order.entitlement_id is not None


def test_success_after_failure_pays(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    failed = make_event("payment_intent.payment_failed", intent(order, "requires_payment_method"))
    post_event(client, failed)
    assert fresh(session, order).status == "failed"
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    assert fresh(session, order).status == "paid"


def test_event_for_an_order_not_committed_yet_is_retried(
    client: TestClient, billing: Billing
) -> None:
    obj = {
        "id": "pi_x",
        "amount": 1,
        "metadata": {"order_id": "0b7c4f7e-2a51-4d1c-9a39-0f5ad0d1a111"},
    }
    event = make_event("payment_intent.succeeded", obj)
    r = post_event(client, event)
    assert r.status_code == 503 and r.json()["error"] == "retry_later"
    # Not recorded: the redelivery is processed again rather than dropped as a duplicate.
    assert post_event(client, event).status_code == 503


def test_refund_and_out_of_order_refund_events(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    order = fresh(session, order)
    pi = order.payment_ref
    now = int(time.time())
    partial = {
        "id": "ch_1",
        "object": "charge",
        "amount": 9900,
        "amount_refunded": 2000,
        "refunded": False,
        "payment_intent": pi,
    }
    full = {**partial, "amount_refunded": 9900, "refunded": True}
    post_event(client, make_event("charge.refunded", full, created=now))
    post_event(client, make_event("charge.refunded", partial, created=now - 10))  # late, older
    order = fresh(session, order)
    assert order.status == "refunded" and order.refunded_minor == 9900
    ent = session.get(Entitlement, order.entitlement_id)
    assert ent is not None and ent.status == "revoked"


def test_partial_refund_keeps_access(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    charge = {
        "id": "ch_1",
        "amount": 9900,
        "amount_refunded": 1500,
        "refunded": False,
        "payment_intent": fresh(session, order).payment_ref,
    }
    post_event(client, make_event("charge.refunded", charge))
    order = fresh(session, order)
    assert order.status == "partially_refunded" and order.refunded_minor == 1500
    assert session.get(Entitlement, order.entitlement_id).status == "active"  # type: ignore[union-attr]


def test_dispute_suspends(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "charge": "ch_1",
        "amount": 9900,
        "payment_intent": fresh(session, order).payment_ref,
    }
    assert post_event(client, make_event("charge.dispute.created", dispute)).status_code == 200
    order = fresh(session, order)
    assert order.disputed_at is not None and order.dispute_status == "open"
    assert session.get(Entitlement, order.entitlement_id).status == "suspended"  # type: ignore[union-attr]


# --- subscriptions ----------------------------------------------------------------------


def active_subscription(session: Session, billing: Billing, shop: Shop) -> Subscription:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active"
    return sub


def invoice(
    sub: Subscription, ref: str, start: int, end: int, amount: int = 4900, new_shape: bool = True
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": ref,
        "object": "invoice",
        "amount_paid": amount,
        "amount_due": amount,
        "currency": "usd",
        "lines": {"data": [{"period": {"start": start, "end": end}}]},
    }
    if new_shape:
        data["parent"] = {"subscription_details": {"subscription": sub.gateway_ref}}
    else:
        data["subscription"] = sub.gateway_ref
    return data


def sub_obj(sub: Subscription, **changes: Any) -> dict[str, Any]:
    end = int(sub.current_period_end.timestamp()) if sub.current_period_end else None
    obj: dict[str, Any] = {
        "id": sub.gateway_ref,
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": False,
        "items": {"data": [{"id": "si_1", "current_period_end": end}]},
    }
    obj.update(changes)
    return obj


def test_renewal_extends_and_duplicates_do_not(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sub = active_subscription(session, billing, shop)
    end1 = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    end2 = end1 + 30 * 86400
    event = make_event("invoice.paid", invoice(sub, "in_renew_1", end1, end2, new_shape=False))
    assert post_event(client, event).json()["status"] == "processed"
    assert post_event(client, event).json()["status"] == "duplicate"
    # localstripe and older API versions also send invoice.payment_succeeded for the same invoice
    again = make_event("invoice.payment_succeeded", invoice(sub, "in_renew_1", end1, end2))
    assert post_event(client, again).json()["status"] == "processed"
    sub = fresh(session, sub)
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and int(ent.ends_at.timestamp()) == end2  # type: ignore[union-attr]
    assert int(sub.current_period_end.timestamp()) == end2  # type: ignore[union-attr]
    paid = session.scalars(select(Order).where(Order.subscription_id == sub.id)).all()
    assert len(paid) == 2 and {o.gateway_ref for o in paid} >= {"in_renew_1"}
    # An older renewal arriving late never shortens access.
    older = make_event("invoice.paid", invoice(sub, "in_renew_0", end1 - 30 * 86400, end1))
    post_event(client, older)
    session.expire_all()
    assert int(session.get(Entitlement, sub.entitlement_id).ends_at.timestamp()) == end2  # type: ignore[union-attr]


def test_a_renewal_by_webhook_re_signs_the_license(
    app: FastAPI, client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    """The webhook's unit of work signs with the app's key ring through the billing runtime
    (given to the app here without one): the renewed terms get a new document at once."""
    sub = active_subscription(session, billing, shop)
    entitlement = session.get(Entitlement, sub.entitlement_id)
    assert entitlement is not None
    keyring, settings = app.state.keyring, app.state.settings
    first = licenses.current_license(session, keyring, settings, entitlement)
    session.commit()
    end1 = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    end2 = end1 + 30 * 86400
    event = make_event("invoice.paid", invoice(sub, "in_resign_1", end1, end2))
    assert post_event(client, event).json()["status"] == "processed"
    session.expire_all()
    entitlement = session.get(Entitlement, sub.entitlement_id)
    assert entitlement is not None
    documents = licenses.licenses_of(session, entitlement)
    assert len(documents) == 2 and documents[1].id == first.id
    assert documents[0].expires_at is not None
    assert int(documents[0].expires_at.timestamp()) == end2
    assert billing.signer is not None and billing.signer.keyring is keyring


def test_payment_failure_grace_then_suspension_then_recovery(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sub = active_subscription(session, billing, shop)
    end1 = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    failed = invoice(sub, "in_fail", end1, end1 + 30 * 86400)
    assert post_event(client, make_event("invoice.payment_failed", failed)).status_code == 200
    sub = fresh(session, sub)
    ent = session.get(Entitlement, sub.entitlement_id)
    assert sub.status == "past_due" and ent is not None
    assert ent.status == "active" and ent.grace_until is not None
    assert ent.grace_until - utcnow() > timedelta(days=6)
    # A retry failing again does not lengthen the grace period.
    grace = ent.grace_until
    post_event(client, make_event("invoice.payment_failed", failed))
    session.expire_all()
    assert session.get(Entitlement, sub.entitlement_id).grace_until == grace  # type: ignore[union-attr]

    # After the grace period the sweep suspends.
    counts = subscriptions.expire_due(session, billing, grace + timedelta(seconds=1))
    assert counts["suspended"] == 1
    session.commit()
    ent = fresh(session, ent)
    assert ent.status == "suspended"

    # Paid at last: active again, to the new period end, grace cleared.
    later = int(time.time()) + 5
    paid = make_event(
        "invoice.paid", invoice(sub, "in_fail", end1, end1 + 30 * 86400), created=later
    )
    post_event(client, paid)
    ent, sub = fresh(session, ent), fresh(session, sub)
    assert ent.status == "active" and ent.grace_until is None and sub.status == "active"
    assert int(ent.ends_at.timestamp()) == end1 + 30 * 86400  # type: ignore[union-attr]
    # The failure delivered again later (older) does not bring back past_due.
    post_event(
        client,
        make_event("invoice.payment_failed", {**failed, "id": "in_fail"}, created=later - 60),
    )
    assert fresh(session, sub).status == "active"


def test_cancel_at_period_end_out_of_order(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sub = active_subscription(session, billing, shop)
    now = int(time.time()) + 10
    newer = make_event(
        "customer.subscription.updated", sub_obj(sub, cancel_at_period_end=True), created=now
    )
    older = make_event(
        "customer.subscription.updated", sub_obj(sub, cancel_at_period_end=False), created=now - 5
    )
    post_event(client, newer)
    post_event(client, older)
    sub = fresh(session, sub)
    assert sub.cancel_at_period_end is True and sub.status == "active"
    resumed = make_event(
        "customer.subscription.updated", sub_obj(sub, cancel_at_period_end=False), created=now + 1
    )
    post_event(client, resumed)
    assert fresh(session, sub).cancel_at_period_end is False


def test_deleted_is_final_and_access_runs_to_period_end(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sub = active_subscription(session, billing, shop)
    now = int(time.time()) + 10
    deleted = make_event(
        "customer.subscription.deleted",
        sub_obj(sub, status="canceled", canceled_at=now),
        created=now,
    )
    stale_update = make_event(
        "customer.subscription.updated", sub_obj(sub, status="active"), created=now + 20
    )
    post_event(client, deleted)
    post_event(client, stale_update)  # even a newer-looking non-final state cannot revive it
    sub = fresh(session, sub)
    assert sub.status == "canceled" and sub.canceled_at is not None
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.status == "active" and ent.ends_at == sub.current_period_end
    subscriptions.expire_due(session, billing, sub.current_period_end + timedelta(seconds=1))  # type: ignore[operator]
    session.commit()
    assert fresh(session, ent).status == "expired" and fresh(session, sub).status == "expired"


def test_trial_from_events(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.trial)
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None
    sub.gateway_ref = "sub_hand_trial"
    session.commit()
    trial_end = int(time.time()) + 14 * 86400
    obj = sub_obj(
        sub, status="trialing", trial_end=trial_end, metadata={"subscription_id": str(sub.id)}
    )
    obj["items"]["data"][0]["current_period_end"] = trial_end
    post_event(client, make_event("customer.subscription.created", obj))
    sub = fresh(session, sub)
    assert sub.status == "trialing"
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.source == "trial" and int(ent.ends_at.timestamp()) == trial_end  # type: ignore[union-attr]


def test_subscription_dispute_suspends(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sub = active_subscription(session, billing, shop)
    order = session.scalars(select(Order).where(Order.subscription_id == sub.id)).one()
    dispute = {"id": "dp_2", "charge": {"id": "ch_2", "payment_intent": order.payment_ref}}
    post_event(client, make_event("charge.dispute.created", dispute))
    session.expire_all()
    assert session.get(Entitlement, sub.entitlement_id).status == "suspended"  # type: ignore[union-attr]


@pytest.mark.parametrize("header", ["t=1,v0=abc", "v1=abc"])
def test_odd_headers(client: TestClient, billing: Billing, header: str) -> None:
    assert post_event(client, make_event("x.y", {"id": "1"}), signature=header).status_code == 400


def test_secret_rotation_two_signatures(client: TestClient, billing: Billing) -> None:
    import json

    body = json.dumps(make_event("x.y", {"id": "1"}))
    good = sign(body)
    t, v1 = good.split(",")
    header = f"{t},v1={'0' * 64},{v1}"
    assert post_event(client, body, signature=header).status_code == 200


# --- bounded bodies -----------------------------------------------------------------------


def test_a_body_over_512_kib_is_refused_before_it_is_read(
    client: TestClient, billing: Billing
) -> None:
    event = make_event("customer.created", {"id": "cus_1", "padding": "x" * (520 * 1024)})
    r = post_event(client, event)  # correctly signed, but too large
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert "512 KiB" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(9):
            yield b"x" * (64 * 1024)

    r = client.post(
        "/billing/stripe/webhook", content=chunks(), headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert r.status_code == 413
    assert client.app.state.sessionmaker().scalar(select(func.count(ProcessedEvent.id))) == 0  # type: ignore[attr-defined]


def test_an_unsigned_body_is_refused_for_its_signature_not_its_shape(
    client: TestClient, billing: Billing
) -> None:
    r = post_event(client, "{ not json", signature="t=1,v1=00")
    assert r.status_code == 400 and r.json()["error"] in ("bad_signature", "stale_signature")
    r = client.post(
        "/billing/stripe/webhook",
        content=b"\xff\xfe not utf-8",
        headers={"Stripe-Signature": sign("another body")},
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_signature"


def test_events_for_unknown_orders_are_acknowledged_after_a_short_window(
    client: TestClient, billing: Billing
) -> None:
    unknown = {"order_id": "0b7c4f7e-2a51-4d1c-9a39-0f5ad0d1a222"}
    old = int(time.time()) - 11 * 60
    for type_, obj in (
        ("payment_intent.succeeded", {"id": "pi_old", "amount": 1, "metadata": unknown}),
        ("payment_intent.payment_failed", {"id": "pi_old2", "metadata": unknown}),
        (
            "customer.subscription.updated",
            {
                "id": "sub_old",
                "status": "active",
                "metadata": {"subscription_id": unknown["order_id"]},
            },
        ),
    ):
        r = post_event(client, make_event(type_, obj, created=old))
        assert r.status_code == 200 and r.json()["status"] == "processed", r.text
        young = post_event(client, make_event(type_, obj))
        assert young.status_code == 503


def test_amount_or_currency_mismatch_never_fulfils(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    r = post_event(client, make_event("payment_intent.succeeded", intent(order, amount=100)))
    assert r.status_code == 200
    held = fresh(session, order)
    assert held.status == "review" and held.entitlement_id is None and held.paid_at is None
    assert "Paid 100 usd" in held.failure_reason
    # A later event for the same payment does not fulfil it either.
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    assert fresh(session, order).status == "review"
    alert = session.scalars(select(AuditEvent).where(AuditEvent.action == "order.review")).one()
    assert alert.target_id == str(order.id)
    # Another currency is a mismatch too.
    other = orders.start_checkout(
        session, billing, account=make_account(session), tier=shop.one_time
    )
    session.commit()
    post_event(client, make_event("payment_intent.succeeded", intent(other, currency="eur")))
    assert fresh(session, other).status == "review"
    # The holder cannot buy again meanwhile: the order is open.
    with pytest.raises(Conflict):
        orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time)


@pytest.mark.parametrize("refunded", [9900, 2000])
def test_a_refund_whose_event_comes_before_the_payments_is_not_lost(
    client: TestClient, session: Session, billing: Billing, shop: Shop, refunded: int
) -> None:
    """Stripe sends events in any order: a charge refunded at once (by an administrator in
    Stripe's dashboard, by fraud screening) may be told before the payment is. The refund is
    kept and applied when the payment lands: a full one never gives access, a partial one
    leaves the order partially refunded; the late payment event changes nothing more."""
    order = pending_order(session, billing, shop)
    pi = intent(order)
    order.payment_ref = pi["id"]  # what paying at the gateway records at once
    session.commit()
    now = int(time.time())
    charge = {
        "id": "ch_early",
        "object": "charge",
        "amount": 9900,
        "amount_refunded": refunded,
        "refunded": refunded == 9900,
        "payment_intent": pi["id"],
    }
    post_event(client, make_event("charge.refunded", charge, created=now))
    assert fresh(session, order).status == "pending"  # not paid yet: nothing to take back
    post_event(client, make_event("payment_intent.succeeded", pi, created=now - 1))
    order = fresh(session, order)
    assert order.refunded_minor == refunded and order.paid_at is not None
    held = session.scalars(select(Entitlement).where(Entitlement.source_ref == str(order.id))).all()
    if refunded == 9900:
        assert order.status == "refunded"
        assert all(e.status == "revoked" for e in held)
    else:
        assert order.status == "partially_refunded"
        assert [e.status for e in held] == ["active"]
    # Delivered again, either event changes nothing.
    post_event(client, make_event("payment_intent.succeeded", pi, created=now + 5))
    post_event(client, make_event("charge.refunded", charge, created=now + 5))
    again = fresh(session, order)
    assert (again.status, again.refunded_minor) == (order.status, refunded)


def test_a_first_invoice_refunded_before_it_is_told_paid_ends_the_subscription(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    """The same for a subscription's first invoice: refunded in full before ``invoice.paid``
    arrives, it gives no access when it does, and billing stops (no renewal)."""
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None
    sub.gateway_ref, order.gateway_ref = "sub_early", "in_early"
    session.commit()
    now = int(time.time())
    charge = {
        "id": "ch_early_sub",
        "object": "charge",
        "amount": order.total_minor,
        "amount_refunded": order.total_minor,
        "refunded": True,
        "invoice": "in_early",
    }
    post_event(client, make_event("charge.refunded", charge, created=now))
    paid = invoice(sub, "in_early", now, now + 30 * 86400, amount=order.total_minor)
    post_event(client, make_event("invoice.paid", paid, created=now - 1))
    order, sub = fresh(session, order), fresh(session, sub)
    assert order.status == "refunded" and order.refunded_minor == order.total_minor
    held = session.get(Entitlement, order.entitlement_id)
    assert held is not None and held.status == "revoked"
    assert sub.end_requested == "now" and sub.end_reason == "refunded"


def test_a_renewal_refunded_before_it_is_told_paid_is_retried_until_it_is(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    """A renewal invoice's order exists only once ``invoice.paid`` is told: its refund told
    first answers 503 (Stripe redelivers it) instead of being acknowledged and lost, and is
    applied once the invoice is known; one that stays unknown past the window is
    acknowledged."""
    sub = active_subscription(session, billing, shop)
    end1 = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    charge = {
        "id": "ch_renew",
        "object": "charge",
        "amount": 4900,
        "amount_refunded": 4900,
        "refunded": True,
        "invoice": "in_renew_early",
    }
    refund = make_event("charge.refunded", charge)
    early = post_event(client, refund)
    assert early.status_code == 503 and early.json()["error"] == "retry_later"
    renewal = invoice(sub, "in_renew_early", end1, end1 + 30 * 86400)
    assert post_event(client, make_event("invoice.paid", renewal)).status_code == 200
    assert post_event(client, refund).json()["status"] == "processed"  # the redelivery
    order = session.scalars(select(Order).where(Order.gateway_ref == "in_renew_early")).one()
    order = fresh(session, order)
    assert order.status == "refunded" and order.refunded_minor == 4900
    sub = fresh(session, sub)
    assert sub.end_requested == "now" and sub.end_reason == "refunded"
    # A charge of an invoice this store never hears of (another store on the account).
    stranger = {**charge, "id": "ch_other", "invoice": "in_someone_else"}
    old = make_event("charge.refunded", stranger, created=int(time.time()) - 11 * 60)
    assert post_event(client, old).json()["status"] == "processed"
