"""Payment notices by e-mail: one per cause, however often the event is delivered; read
from a real SMTP server."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.billing.runtime import Billing
from store.config import Settings
from store.mail import sender
from store.mail.backends import SmtpBackend
from store.mail.models import OutboxMessage
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event
from tests.billing.test_webhooks import active_subscription, invoice
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
    got = smtp.wait_for(2)
    subjects = sorted(m["Subject"] for m in got)
    assert len(got) == 2 and any("failed" in s for s in subjects)
    assert sender.Sender(session_factory, settings, backend=backend).run_once()["sent"] == 0
