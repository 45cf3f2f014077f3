"""Names people type end up in mail subjects (an inviter's display name, an organization's
name): a line break in one neither adds a header nor keeps the message from being sent.
Delivered to a real SMTP server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.accounts import service as accounts
from store.config import Settings
from store.db import session_scope
from store.mail import sender
from store.mail.models import OutboxMessage
from tests.factories import make_account, make_org
from tests.mail.conftest import factory, mail_db_url, mail_engine, mail_settings, smtp
from tests.mail.smtp_sink import SmtpSink

__all__ = ["factory", "mail_db_url", "mail_engine", "mail_settings", "smtp"]  # fixtures


def test_a_line_break_in_a_name_adds_no_header_and_the_message_is_sent(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    """Names are refused with line breaks at input now (store.validation); rows written
    before that still make safe mail."""
    with session_scope(factory) as session:
        eve = make_account(session, "mail-eve")
        eve.display_name = "Eve\r\nBcc: victim@example.com"  # as an older row may hold
        org = make_org(session, eve, "mail-evil", name="Evil")
        org.name = "Evil\nX-Injected: yes"
        make_account(session, "mail-bob")
        accounts.invite_member(
            session, org=org, actor=eve, username="mail-bob", role="viewer", settings=mail_settings
        )

    counts = sender.Sender(factory, mail_settings).run_once()
    assert counts == {"sent": 1, "retry": 0, "failed": 0}
    [msg] = smtp.wait_for(1)
    assert msg["To"] == "mail-bob@example.com"
    assert "Bcc" not in msg and "X-Injected" not in msg
    assert msg["Subject"] == "Eve Bcc: victim@example.com invites you to Evil X-Injected: yes"
    with factory() as session:
        [row] = session.scalars(select(OutboxMessage)).all()
        assert row.status == "sent" and row.attempts == 1
