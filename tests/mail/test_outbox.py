"""Writing to the outbox: rendering, one message per cause, notice preferences."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.config import Settings
from store.errors import ValidationFailed
from store.mail import outbox
from store.mail.models import MailOptOut, OutboxMessage
from tests.factories import make_account


def _messages(session: Session) -> list[OutboxMessage]:
    return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at)))


def test_message_is_rendered_into_the_outbox(session: Session, settings: Settings) -> None:
    account = make_account(session, "reader", display_name="Rea Der")
    message_id = outbox.enqueue(session, settings=settings, template="test", account=account)
    [row] = _messages(session)
    assert row.id == message_id and row.status == "pending" and row.attempts == 0
    assert row.to_addr == account.email and row.account_id == account.id
    assert row.subject == "Test message from store.test"
    assert row.text_body.startswith("This is a test message")
    assert "Hello" not in row.subject
    assert "http://store.test/my/notifications" in row.text_body
    assert '<a href="http://store.test/my/notifications">' in row.html_body
    assert row.message_id.startswith("<") and row.message_id.endswith("@store.test>")
    assert row.headers == {}


def test_a_cause_queues_one_message(session: Session, settings: Settings) -> None:
    first = outbox.enqueue(
        session, settings=settings, template="test", to="a@example.com", dedupe_key="k1"
    )
    again = outbox.enqueue(
        session, settings=settings, template="test", to="a@example.com", dedupe_key="k1"
    )
    other = outbox.enqueue(
        session, settings=settings, template="test", to="a@example.com", dedupe_key="k2"
    )
    assert first is not None and again is None and other is not None
    assert len(_messages(session)) == 2


def test_notices_carry_one_click_unsubscribe_and_respect_opt_outs(
    session: Session, settings: Settings
) -> None:
    account = make_account(session, "seller")
    outbox.enqueue(session, settings=settings, template="test", account=account, category="sales")
    [row] = _messages(session)
    url = row.headers["List-Unsubscribe"].strip("<>")
    assert url.startswith("http://store.test/mail/unsubscribe/")
    assert row.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert url in row.text_body and url in row.html_body
    token = url.rsplit("/", 1)[1]
    assert outbox.read_unsubscribe_token(settings, token) == (account.id, "sales")

    session.add(MailOptOut(account_id=account.id, category="sales"))
    session.flush()
    assert (
        outbox.enqueue(
            session, settings=settings, template="test", account=account, category="sales"
        )
        is None
    )
    # Transactional mail is sent whatever the preferences.
    assert outbox.enqueue(session, settings=settings, template="test", account=account)


def test_forged_or_unknown_unsubscribe_links_are_refused(settings: Settings) -> None:
    import uuid

    good = outbox.unsubscribe_token(settings, uuid.uuid4(), "sales")
    for bad in (
        good[:-2] + "xx",
        "nonsense",
        outbox.unsubscribe_token(settings, uuid.uuid4(), "x"),
    ):
        with pytest.raises(ValidationFailed):
            outbox.read_unsubscribe_token(settings, bad)
    with pytest.raises(ValueError):
        outbox.enqueue(
            None,  # type: ignore[arg-type]
            settings=settings,
            template="test",
            to="a@example.com",
            category="no-such-category",
        )
