"""Links by e-mail against a password that changed since they were sent: a change of
address asked (or a reset link mailed) before the password changed or was reset does not
work after it. Whoever asked may have been someone holding a stolen password; the owner
changing it must shut them out."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import links
from store.accounts import service as accounts
from store.accounts.models import Account
from store.config import Settings
from store.mail.models import OutboxMessage
from tests.factories import PASSWORD, make_account

NEW_PASSWORD = "a-brand-new-password-1"
OTHER_PASSWORD = "yet-another-password-2"


def _token(session: Session, template: str, path: str) -> str:
    """The secret of the newest link of ``template`` in the outbox."""
    body = session.scalars(
        select(OutboxMessage.text_body)
        .where(OutboxMessage.template == template)
        .order_by(OutboxMessage.created_at.desc())
    ).first()
    assert body is not None
    match = re.search(rf"{path}/(\S+)", body)
    assert match, body
    return match.group(1)


def _ask_change(session: Session, settings: Settings, account: Account, address: str) -> str:
    links.request_email_change(
        session, settings=settings, account=account, new_address=address, password=PASSWORD
    )
    return _token(session, "email_change", "/confirm-email")


def _ask_reset(session: Session, settings: Settings, account: Account) -> str:
    links.request_password_reset(session, settings=settings, address=account.email)
    return _token(session, "password_reset", "/password/reset")


@pytest.mark.parametrize("how", ["changed", "reset"])
def test_a_change_of_address_asked_before_the_password_changed_does_not_work_after(
    session: Session, settings: Settings, how: str
) -> None:
    account = make_account(session, f"victim-{how}")
    stolen = _ask_change(session, settings, account, f"thief-{how}@example.com")
    if how == "changed":
        accounts.change_password(session, account=account, current=PASSWORD, new=NEW_PASSWORD)
    else:
        reset = _ask_reset(session, settings, account)
        links.reset_password(session, settings=settings, token=reset, password=NEW_PASSWORD)
    session.commit()

    with pytest.raises(links.BadLink):
        links.pending_email(session, token=stolen)
    with pytest.raises(links.BadLink):
        links.confirm_email_change(session, settings=settings, token=stolen)
    session.rollback()
    session.expire_all()
    assert session.get(Account, account.id).email == f"victim-{how}@example.com"  # type: ignore[union-attr]


def test_a_reset_link_mailed_before_the_password_changed_does_not_work_after(
    session: Session, settings: Settings
) -> None:
    account = make_account(session, "resetter")
    early = _ask_reset(session, settings, account)
    accounts.change_password(session, account=account, current=PASSWORD, new=NEW_PASSWORD)
    session.commit()

    with pytest.raises(links.BadLink):
        links.peek(session, token=early, purpose="reset")
    with pytest.raises(links.BadLink):
        links.reset_password(session, settings=settings, token=early, password=OTHER_PASSWORD)
    session.rollback()
    # A link asked for after the change works as ever.
    late = _ask_reset(session, settings, account)
    links.reset_password(session, settings=settings, token=late, password=OTHER_PASSWORD)
    session.commit()
