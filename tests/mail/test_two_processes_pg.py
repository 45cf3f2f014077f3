"""A renewal that fails, its webhook delivered at the same moment to two store processes on
one PostgreSQL database, twice, and again as a new event about the same invoice: one
failed-payment e-mail arrives at the real SMTP server, though both processes run a sender."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from store import PROJECT_DIR
from store.billing import orders
from store.billing.gateway import PaymentInput
from store.billing.models import Subscription
from store.billing.runtime import build_billing
from store.billing.test_gateway import CARD_SUCCESS
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope
from store.mail.models import OutboxMessage
from tests.billing.helpers import WEBHOOK_SECRET, billing_settings, make_event
from tests.billing.test_concurrency_pg import _post_together
from tests.billing.test_webhooks import invoice
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.mail.smtp_sink import SmtpSink
from tests.pg import PG_URL, scratch_database
from tests.servers import uvicorn_apps

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)"),
]


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_database("mail_two", migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def two_apps(
    pg_database: str, sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    data_dir = tmp_path_factory.mktemp("mail-two")
    env = {
        **os.environ,
        "STORE_DATABASE_URL": pg_database,
        "STORE_DATA_DIR": str(data_dir),
        "STORE_SECRET_KEY": "two-process-mail-secret-0123456789",
        "STORE_PUBLIC_URL": "http://store.test",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STORE_BILLING_GATEWAY": "test",
        "STORE_BILLING_SWEEP_INTERVAL": "0",
        "STORE_MAIL_SMTP_HOST": "127.0.0.1",
        "STORE_MAIL_SMTP_PORT": str(sink.port),
        "STORE_MAIL_SMTP_SECURITY": "none",
        "STORE_MAIL_POLL_INTERVAL": "0.1",
        "PYTHONPATH": str(PROJECT_DIR),
    }
    with uvicorn_apps("tests.mail.two_process_app:make_app", env) as bases:
        yield bases


def _running_subscription(url: str) -> tuple[Subscription, str]:
    """A monthly subscription paid through the test gateway: (it, the buyer's address)."""
    engine = make_engine(url)
    settings = Settings(environment="test", public_url="http://store.test")
    billing = build_billing(billing_settings(), settings)
    with session_scope(make_sessionmaker(engine)) as session:
        owner = make_account(session)
        product = make_product(
            session, make_org(session, owner), owner, tiers=[paid_tier("pro", 4900, "month")]
        )
        buyer = make_account(session)
        order = orders.start_checkout(session, billing, account=buyer, tier=tier_of(product, "pro"))
        session.commit()
        orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
        session.commit()
        sub = session.get(Subscription, order.subscription_id)
        assert sub is not None and sub.status == "active" and sub.gateway_ref
        session.expunge(sub)
        address = buyer.email
    engine.dispose()
    return sub, address


def _outbox_settled(url: str, timeout: float = 60) -> None:
    """Wait until no message is waiting or being sent."""
    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                busy = conn.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status.in_(("pending", "sending")))
                )
            if not busy:
                return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError("the outbox did not settle")


def test_one_failed_payment_mail_from_two_processes(
    pg_database: str, two_apps: list[str], sink: SmtpSink
) -> None:
    sub, address = _running_subscription(pg_database)
    end = int(sub.current_period_end.timestamp())  # type: ignore[union-attr]
    failed: dict[str, Any] = invoice(sub, "in_two_fail", end, end + 30 * 86400)
    first = json.dumps(make_event("invoice.payment_failed", failed))
    # The same event to both at once, twice; then Stripe's next event about the invoice.
    for body in (first, first, json.dumps(make_event("invoice.payment_failed", failed))):
        responses = _post_together(two_apps, [body, body])
        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]

    _outbox_settled(pg_database)
    engine = make_engine(pg_database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(OutboxMessage.status, OutboxMessage.to_addr).where(
                    OutboxMessage.template == "payment_failed"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("sent", address)]
    received = [m for m in sink.received() if m["To"] == address and "failed" in m["Subject"]]
    assert len(received) == 1
    body = received[0].get_body(preferencelist=("plain",))
    assert body is not None and "$49.00" in body.get_content()
    # Every message went out exactly once (receipts and sale notices included).
    ids = [m["Message-ID"] for m in sink.received()]
    assert len(ids) == len(set(ids))
