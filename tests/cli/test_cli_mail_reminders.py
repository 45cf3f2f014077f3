"""`store mail reminders` against the CLI's own database: a trial that ends within three days
is reminded once, however often the command runs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.gateway import PaymentInput
from store.billing.models import Subscription
from store.billing.runtime import build_billing
from store.billing.test_gateway import CARD_SUCCESS
from store.config import Settings
from store.db import utcnow
from store.mail.models import OutboxMessage
from tests.billing.helpers import billing_settings
from tests.cli._support import Run
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of


def test_reminders_are_queued_once(run: Run, db: Session) -> None:
    empty = run("mail", "reminders", "--json")
    assert empty.code == 0 and empty.json() == {"trial_ending": 0, "grace_ending": 0}
    publisher = make_account(db, "remind-pub")
    product = make_product(
        db,
        make_org(db, publisher, "remind-org"),
        publisher,
        tiers=[paid_tier("team", 49000, "year", trial_days=14)],
    )
    buyer = make_account(db, "remind-buyer")
    billing = build_billing(billing_settings(), Settings())
    order = orders.start_checkout(db, billing, account=buyer, tier=tier_of(product, "team"))
    orders.pay(db, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    trial = db.get(Subscription, order.subscription_id)
    assert trial is not None and trial.status == "trialing"
    trial.trial_end = utcnow() + timedelta(days=1)
    db.commit()

    first = run("mail", "reminders", "--json")
    assert first.code == 0 and first.json()["trial_ending"] == 1, first.err
    again = run("mail", "reminders")
    assert again.code == 0 and "queued 0 trial and 0 grace reminders" in again.out
    db.expire_all()
    [reminder] = db.scalars(
        select(OutboxMessage).where(OutboxMessage.template == "trial_ending")
    ).all()
    assert reminder.to_addr == "remind-buyer@example.com" and "$490.00" in reminder.text_body
