"""Credentials that work once, spent by two connections at the same instant (SQLite and
PostgreSQL): a password reset link resets once, a recovery code signs in once."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.accounts import links, two_factor
from store.accounts.models import Account
from store.config import Settings
from store.db import session_scope, utcnow
from store.errors import StoreError
from store.mail.models import OutboxMessage
from tests.factories import PASSWORD, make_account
from tests.mail.conftest import factory, mail_db_url, mail_engine, mail_settings, smtp

__all__ = ["factory", "mail_db_url", "mail_engine", "mail_settings", "smtp"]  # fixtures

TRIES = 4


def _at_once(factory: sessionmaker[Session], spend: Callable[[Session], object]) -> int:
    """Run ``spend`` in TRIES threads at once, each in a transaction of its own; how many
    committed."""
    barrier = threading.Barrier(TRIES)
    won: list[bool] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            with session_scope(factory) as session:
                spend(session)
        except StoreError:
            ok = False
        else:
            ok = True
        with lock:
            won.append(ok)

    threads = [threading.Thread(target=one) for _ in range(TRIES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == TRIES
    return sum(won)


def test_a_reset_link_resets_once(factory: sessionmaker[Session], mail_settings: Settings) -> None:
    with session_scope(factory) as session:
        account = make_account(session, "once-reset")
        links.request_password_reset(session, settings=mail_settings, address=account.email)
    with factory() as session:
        body = session.scalars(
            select(OutboxMessage.text_body).where(OutboxMessage.template == "password_reset")
        ).one()
    match = re.search(r"/password/reset/(\S+)", body)
    assert match
    token = match.group(1)

    def spend(session: Session) -> None:
        links.reset_password(
            session, settings=mail_settings, token=token, password="a-brand-new-password-1"
        )

    assert _at_once(factory, spend) == 1


def test_a_recovery_code_signs_in_once(
    factory: sessionmaker[Session], mail_settings: Settings
) -> None:
    with session_scope(factory) as session:
        account = make_account(session, "once-code")
        secret = two_factor.begin(session, settings=mail_settings, account=account).secret
        totp = pyotp.TOTP(secret)
        codes = two_factor.confirm(
            session,
            settings=mail_settings,
            account=account,
            code=totp.generate_otp(totp.timecode(utcnow())),
            password=PASSWORD,
        )
        account_id = account.id

    def spend(session: Session) -> None:
        fresh = session.get(Account, account_id)
        assert fresh is not None
        two_factor.verify(session, settings=mail_settings, account=fresh, code=codes[0])

    assert _at_once(factory, spend) == 1
    with factory() as session:
        fresh = session.get(Account, account_id)
        assert fresh is not None
        assert two_factor.recovery_codes_left(session, fresh) == len(codes) - 1
