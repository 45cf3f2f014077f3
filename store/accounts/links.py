"""Links sent by e-mail: address verification, password reset and change of address.

Each link carries a random secret of 256 bits; only its SHA-256 is stored. A link works once:
it is spent by a conditional UPDATE (``used_at IS NULL AND expires_at > now``), so two
clicks, or two processes, use it once. A link for an address stops working when the
account's address changes. Reset links last an hour, and asking for a new one voids the
older ones; the answer to "send me a reset link" is the same whether or not an account has
the address. A change of address is asked with the current password and takes effect only
when the link sent to the new address is opened (which also confirms it); the old address
is told when the change is asked and when it is made. Changing or resetting the password
voids the reset links and the change of address still pending
(``accounts.set_password``).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import security
from store.accounts import service as accounts
from store.accounts.models import Account, AccountToken
from store.audit import service as audit
from store.config import Settings
from store.db import utcnow
from store.errors import Conflict, ValidationFailed
from store.mail import outbox
from store.validation import email as valid_email

RESET_TTL = timedelta(hours=1)
VERIFY_TTL = timedelta(days=3)
EMAIL_CHANGE_TTL = timedelta(days=1)


class BadLink(ValidationFailed):
    code = "bad_link"

    def __init__(self) -> None:
        super().__init__(
            "This link is not valid: it was used already, has expired, or was replaced by a "
            "newer one. Ask for a new link."
        )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(
    session: Session, account: Account, purpose: str, ttl: timedelta, *, email: str | None = None
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        AccountToken(
            account_id=account.id,
            purpose=purpose,
            token_hash=_hash(token),
            email=email or account.email,
            expires_at=utcnow() + ttl,
        )
    )
    session.flush()
    return token


def _void(session: Session, account: Account, purpose: str) -> None:
    session.execute(
        update(AccountToken)
        .where(
            AccountToken.account_id == account.id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def _still_valid(account: Account, purpose: str, address: str) -> bool:
    """A verify or reset link is for the address the account has now; a change-of-address
    link names the new address (asking again, or a change made, voids it)."""
    if not account.is_active:
        return False
    return purpose == "email" or account.email == address


def peek(session: Session, *, token: str, purpose: str) -> Account:
    """The account a link is for, if it still works (nothing is spent: for showing a form)."""
    row = session.scalar(
        select(AccountToken).where(
            AccountToken.token_hash == _hash(token),
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > utcnow(),
        )
    )
    account = session.get(Account, row.account_id) if row is not None else None
    if row is None or account is None or not _still_valid(account, purpose, row.email):
        raise BadLink()
    return account


def _spend(session: Session, *, token: str, purpose: str) -> Account:
    row = session.execute(
        update(AccountToken)
        .where(
            AccountToken.token_hash == _hash(token),
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > utcnow(),
        )
        .values(used_at=utcnow())
        .returning(AccountToken.account_id, AccountToken.email)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    account = session.get(Account, row.account_id) if row is not None else None
    if row is None or account is None or not _still_valid(account, purpose, row.email):
        raise BadLink()
    return account


# --- verification -------------------------------------------------------------------------


def send_verification(session: Session, *, settings: Settings, account: Account) -> bool:
    """Mail a link that confirms the account's address; False when it is confirmed already."""
    if account.email_verified_at is not None:
        return False
    _void(session, account, "verify")
    token = _issue(session, account, "verify", VERIFY_TTL)
    outbox.enqueue(
        session,
        settings=settings,
        template="verify_email",
        account=account,
        context={"url": f"{settings.public_url}/verify-email/{token}"},
    )
    return True


def verify_email(session: Session, *, token: str) -> Account:
    """Confirm the address a verification link was sent to."""
    account = _spend(session, token=token, purpose="verify")
    if account.email_verified_at is None:
        account.email_verified_at = utcnow()
        audit.record(session, action="account.email_verified", actor=account, target=account)
    session.flush()
    return account


# --- password reset -----------------------------------------------------------------------


def request_password_reset(session: Session, *, settings: Settings, address: str) -> None:
    """Mail a reset link to the account with this address, if there is an active one. The
    caller answers the same either way."""
    account = session.scalar(select(Account).where(Account.email == valid_email(address)))
    if account is None or not account.is_active:
        return
    _void(session, account, "reset")
    token = _issue(session, account, "reset", RESET_TTL)
    outbox.enqueue(
        session,
        settings=settings,
        template="password_reset",
        account=account,
        context={"url": f"{settings.public_url}/password/reset/{token}", "minutes": 60},
    )


def reset_password(session: Session, *, settings: Settings, token: str, password: str) -> Account:
    """Set a new password with a reset link. Every session of the account (cookies carry the
    time of the last password change) and every registry refresh token ends; the address is
    confirmed (the link reached it)."""
    from store.validation import password as valid_password

    valid_password(password)  # a refused password does not spend the link
    account = _spend(session, token=token, purpose="reset")
    accounts.set_password(session, account=account, password=password)  # voids the others
    if account.email_verified_at is None:
        account.email_verified_at = utcnow()
    audit.record(session, action="account.password_reset", actor=account, target=account)
    outbox.enqueue(session, settings=settings, template="password_changed", account=account)
    session.flush()
    return account


def two_factor_off_notice(session: Session, *, settings: Settings, account: Account) -> None:
    """Tell the owner that two-factor sign-in was turned off (the link to reset the
    password, should it not have been them)."""
    outbox.enqueue(session, settings=settings, template="two_factor_off", account=account)


# --- change of address --------------------------------------------------------------------


def pending_email(session: Session, *, token: str) -> tuple[Account, str]:
    """The account and the new address a change-of-address link would set (nothing spent)."""
    account = peek(session, token=token, purpose="email")
    row = session.scalar(select(AccountToken).where(AccountToken.token_hash == _hash(token)))
    assert row is not None  # peek found it
    return account, row.email


def _address_free(
    session: Session, account: Account, address: str, *, field: str | None = None
) -> None:
    """``field``: the input the address was typed in (none when it comes from a link)."""
    if session.scalar(select(Account.id).where(Account.email == address, Account.id != account.id)):
        raise Conflict(
            "An account with this e-mail address exists", code="email_taken", field=field
        )


def request_email_change(
    session: Session, *, settings: Settings, account: Account, new_address: str, password: str
) -> str:
    """Mail a confirmation link to ``new_address`` (the current password proves it is the
    owner asking) and a notice to the current address; the new address, normalised. The
    address does not change until the link is opened; asking again voids the earlier link."""
    if not security.verify_password(account.password_hash, password):
        raise ValidationFailed(
            "The current password is not correct", code="wrong_password", field="password"
        )
    address = valid_email(new_address)
    if address == account.email:
        raise ValidationFailed("This is your address already", code="same_email", field="email")
    _address_free(session, account, address, field="email")
    _void(session, account, "email")
    token = _issue(session, account, "email", EMAIL_CHANGE_TTL, email=address)
    outbox.enqueue(
        session,
        settings=settings,
        template="email_change",
        account=account,
        to=address,
        context={"url": f"{settings.public_url}/confirm-email/{token}", "new_email": address},
    )
    outbox.enqueue(
        session,
        settings=settings,
        template="email_change_requested",
        account=account,
        context={"new_email": address, "url": f"{settings.public_url}/password/forgot"},
    )
    audit.record(
        session,
        action="account.email_change_requested",
        actor=account,
        target=account,
    )
    session.flush()
    return address


def confirm_email_change(session: Session, *, settings: Settings, token: str) -> Account:
    """Open a change-of-address link: the account's address becomes the new one, confirmed;
    the old address gets a notice. Links sent to the old address stop working."""
    row = session.execute(
        update(AccountToken)
        .where(
            AccountToken.token_hash == _hash(token),
            AccountToken.purpose == "email",
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > utcnow(),
        )
        .values(used_at=utcnow())
        .returning(AccountToken.account_id, AccountToken.email)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    account = session.get(Account, row.account_id) if row is not None else None
    if row is None or account is None or not account.is_active:
        raise BadLink()
    old, new = account.email, row.email
    _address_free(session, account, new)
    try:
        with session.begin_nested():
            account.email = new
            account.email_verified_at = utcnow()
            session.flush()
    except IntegrityError:
        # Another account took the address at the same instant.
        raise Conflict("An account with this e-mail address exists", code="email_taken") from None
    for purpose in ("email", "verify", "reset"):
        _void(session, account, purpose)
    audit.record(
        session,
        action="account.email_changed",
        actor=account,
        target=account,
    )
    outbox.enqueue(
        session,
        settings=settings,
        template="email_changed",
        account=account,
        to=old,
        context={"new_email": new, "url": f"{settings.public_url}/password/forgot"},
    )
    session.flush()
    return account
