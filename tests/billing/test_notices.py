"""Payment notices by e-mail: one per cause, however often the event is delivered; read
from a real SMTP server."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.billing import notices, orders, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.config import Settings
from store.licensing.models import Entitlement
from store.mail import sender
from store.mail import service as mail_service
from store.mail.backends import SmtpBackend
from store.mail.models import OutboxMessage
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event
from tests.billing.test_webhooks import (
    active_subscription,
    fresh,
    intent,
    invoice,
    pending_order,
    sub_obj,
)
from tests.factories import make_account
from tests.mail.conftest import smtp  # noqa: F401  (fixture)
from tests.mail.smtp_sink import SmtpSink


def _messages(session: Session, template: str) -> list[OutboxMessage]:
    session.expire_all()
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.template == template)))


def test_one_failed_payment_mail_however_often_the_event_comes(
    client: TestClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    billing: Billing,
    shop: Shop,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    sub = active_subscription(session, billing, shop)
    [receipt] = _messages(session, "receipt")  # the first payment's receipt
    assert receipt.to_addr == shop.buyer.email and "Receipt" in receipt.subject
    end = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    failed = invoice(sub, "in_notice_fail", end, end + 30 * 86400)
    event = make_event("invoice.payment_failed", failed)
    assert post_event(client, event).status_code == 200
    assert post_event(client, event).status_code == 200  # the same event again
    # Another event about the same failed invoice (Stripe's retry) mails nothing more.
    assert post_event(client, make_event("invoice.payment_failed", failed)).status_code == 200
    [notice] = _messages(session, "payment_failed")
    assert notice.to_addr == shop.buyer.email
    assert "/my/purchases" in notice.text_body and "$49.00" in notice.text_body

    backend = SmtpBackend(
        host="127.0.0.1",
        port=smtp.port,
        security="none",
        username=None,
        password=None,
        timeout=5,
        sender=settings.resolved_mail_from,
    )
    sender.Sender(session_factory, settings, backend=backend).run_once()
    # The buyer's receipt and failed-payment notice; the seller's new-sale notice.
    got = smtp.wait_for(3)
    buyer = sorted(m["Subject"] for m in got if m["To"] == shop.buyer.email)
    assert len(got) == 3 and len(buyer) == 2 and any("failed" in s for s in buyer)
    assert sender.Sender(session_factory, settings, backend=backend).run_once()["sent"] == 0


# --- every notice, once per cause -------------------------------------------------------------


def _to(session: Session, template: str, address: str) -> list[OutboxMessage]:
    return [m for m in _messages(session, template) if m.to_addr == address]


def _deliver(session_factory: sessionmaker[Session], settings: Settings, sink: SmtpSink) -> None:
    backend = SmtpBackend(
        host="127.0.0.1",
        port=sink.port,
        security="none",
        username=None,
        password=None,
        timeout=5,
        sender=settings.resolved_mail_from,
    )
    sender.Sender(session_factory, settings, backend=backend).run_once()


def test_receipt_carries_the_pdf_and_the_seller_hears_of_the_sale_once(
    client: TestClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    billing: Billing,
    shop: Shop,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    order = pending_order(session, billing, shop)
    event = make_event("payment_intent.succeeded", intent(order))
    assert post_event(client, event).status_code == 200
    assert post_event(client, event).status_code == 200
    [sale] = _to(session, "new_sale", shop.publisher.email)
    assert sale.category == "sales" and "$99.00" in sale.text_body
    assert "List-Unsubscribe" in sale.headers
    _deliver(session_factory, settings, smtp)
    got = smtp.wait_for(2)
    [receipt] = [m for m in got if m["To"] == shop.buyer.email]
    [pdf] = list(receipt.iter_attachments())
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_filename() == f"receipt-{fresh(session, order).receipt_number}.pdf"
    assert pdf.get_content().startswith(b"%PDF-")
    assert receipt.get_body(preferencelist=("plain",)) is not None
    assert receipt.get_body(preferencelist=("html",)) is not None


def test_a_seller_who_turned_sales_off_is_not_told(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    mail_service.set_preferences(session, account=shop.publisher, wanted={"reviews"})
    session.commit()
    order = pending_order(session, billing, shop)
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    assert not _messages(session, "new_sale")
    assert _to(session, "receipt", shop.buyer.email)


def test_refund_notice_once_per_refunded_amount(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    charge = {
        "id": "ch_n1",
        "object": "charge",
        "amount": 9900,
        "amount_refunded": 2000,
        "refunded": False,
        "payment_intent": fresh(session, order).payment_ref,
    }
    partial = make_event("charge.refunded", charge)
    post_event(client, partial)
    post_event(client, partial)
    [first] = _messages(session, "refund")
    assert first.to_addr == shop.buyer.email and "$20.00" in first.text_body
    full = make_event("charge.refunded", {**charge, "amount_refunded": 9900, "refunded": True})
    post_event(client, full)
    post_event(client, full)
    refunds = _messages(session, "refund")
    assert len(refunds) == 2 and any("$79.00" in m.text_body for m in refunds)


def test_renewal_and_cancellation_notices_once(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sub = active_subscription(session, billing, shop)
    assert not _messages(session, "subscription_renewed")  # the first payment is no renewal
    end1 = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    end2 = end1 + 30 * 86400
    paid = make_event("invoice.paid", invoice(sub, "in_notice_renew", end1, end2))
    post_event(client, paid)
    post_event(client, paid)
    post_event(
        client, make_event("invoice.payment_succeeded", invoice(sub, "in_notice_renew", end1, end2))
    )
    [renewed] = _messages(session, "subscription_renewed")
    assert renewed.category == "renewals" and renewed.to_addr == shop.buyer.email
    assert "renewed until" in renewed.text_body

    sub = fresh(session, sub)
    now = int(time.time()) + 5
    ending = make_event(
        "customer.subscription.updated", sub_obj(sub, cancel_at_period_end=True), created=now
    )
    post_event(client, ending)
    post_event(client, ending)
    deleted = make_event(
        "customer.subscription.deleted",
        sub_obj(sub, status="canceled", canceled_at=now + 1),
        created=now + 1,
    )
    post_event(client, deleted)
    post_event(client, deleted)
    [canceled] = _messages(session, "subscription_canceled")
    assert canceled.to_addr == shop.buyer.email and "access ends on" in canceled.text_body


def test_trial_and_grace_reminders_are_queued_once_and_suspension_is_told(
    client: TestClient,
    session: Session,
    settings: Settings,
    billing: Billing,
    shop: Shop,
) -> None:
    # A trial whose first charge is two days away.
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.trial)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    trial = fresh(session, session.get(Subscription, order.subscription_id))
    assert trial.status == "trialing" and trial.trial_end is not None
    now = trial.trial_end - timedelta(days=2)
    assert notices.send_reminders(session, settings, now=now - timedelta(days=2)) == {
        "trial_ending": 0,
        "grace_ending": 0,
    }
    assert notices.send_reminders(session, settings, now=now)["trial_ending"] == 1
    assert notices.send_reminders(session, settings, now=now)["trial_ending"] == 0
    session.commit()
    [reminder] = _messages(session, "trial_ending")
    assert "$490.00" in reminder.text_body and f"{trial.trial_end:%Y-%m-%d}" in reminder.text_body

    # A failed renewal: the grace period's end is reminded once, then access is suspended.
    other = make_account(session)
    sub = active_subscription(session, billing, replace(shop, buyer=other))
    end = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    post_event(
        client,
        make_event("invoice.payment_failed", invoice(sub, "in_grace", end, end + 86400 * 30)),
    )
    ent = fresh(session, session.get(Entitlement, fresh(session, sub).entitlement_id))
    assert ent.grace_until is not None
    soon = ent.grace_until - timedelta(days=1)
    assert subscriptions.expire_due(session, billing, soon)["grace_ending"] == 1
    assert subscriptions.expire_due(session, billing, soon)["grace_ending"] == 0
    after = ent.grace_until + timedelta(seconds=1)
    assert subscriptions.expire_due(session, billing, after)["suspended"] == 1
    subscriptions.expire_due(session, billing, after)
    session.commit()
    [grace] = _to(session, "grace_ending", other.email)
    assert f"{ent.grace_until:%Y-%m-%d}" in grace.text_body
    [suspended] = _to(session, "access_suspended", other.email)
    assert "suspended" in suspended.subject


def test_order_notices_go_only_to_a_reachable_buyer_with_settings(
    client: TestClient, session: Session, billing: Billing, shop: Shop, settings: Settings
) -> None:
    order = pending_order(session, billing, shop)
    post_event(client, make_event("payment_intent.succeeded", intent(order)))
    order = fresh(session, order)
    before = {t: len(_messages(session, t)) for t in ("receipt", "refund")}
    # Without settings nothing is mailed (and nothing breaks).
    notices.receipt(session, None, order=order)
    notices.refund(session, None, order=order, amount_minor=100)
    session.flush()
    assert {t: len(_messages(session, t)) for t in before} == before
    # A disabled buyer hears nothing of the order.
    shop.buyer.is_active = False
    session.flush()
    notices.receipt(session, settings, order=order)
    notices.refund(session, settings, order=order, amount_minor=100)
    session.flush()
    assert {t: len(_messages(session, t)) for t in before} == before
    shop.buyer.is_active = True
    session.flush()
    notices.refund(session, settings, order=order, amount_minor=100)
    session.flush()
    [sent] = [m for m in _messages(session, "refund") if "$1.00" in m.text_body]
    assert sent.to_addr == shop.buyer.email and "/receipt" in sent.text_body
