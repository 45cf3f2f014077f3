"""Two-factor sign-in: TOTP (RFC 6238) with QR enrolment and single-use recovery codes.

* Enrolment makes a random secret (160 bits), kept encrypted under the store secret
  (AES-256-GCM, key derived by HKDF), shown once as a QR code and as text; it is in force
  only after a code made from it is confirmed. Confirming makes ten recovery codes, shown
  once and stored as hashes. Confirming needs the current password too (a session alone
  does not turn it on), and the account's other web sessions end: the password alone
  made them.
* A code is accepted for the current 30-second step or one step either side (clock drift),
  and each step only once per account: the step is recorded by a conditional UPDATE, so the
  same code sent twice, or by two processes at once, signs in once.
* A recovery code works once (also a conditional UPDATE).
* Turning two-factor sign-in off needs the current password and a current code (or a
  recovery code): a stolen session and one code seen over a shoulder do not take the second
  factor away. Every other web session of the account ends (they may be the thief's), it is
  audited and the owner is mailed. Making new recovery codes needs a current code or a
  recovery code.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import pyotp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from store import security
from store.accounts import links, sessions
from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account, Membership
from store.accounts.models import RecoveryCode as RecoveryCodeTable
from store.audit import service as audit
from store.config import Settings
from store.db import utcnow
from store.errors import Conflict, ValidationFailed

RECOVERY_CODES = 10
STEP_S = 30
_ENVELOPE = "v1"


class BadCode(ValidationFailed):
    """A wrong two-factor or recovery code: every form and API that asks for one names the
    input ``code``."""

    code = "bad_two_factor_code"

    def __init__(self) -> None:
        super().__init__(
            "That code is not valid. Enter the current code from your app.", field="code"
        )


# --- the secret at rest -----------------------------------------------------------------


def _key(settings: Settings) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"store-totp", info=b"aes-256-gcm v1"
    ).derive(settings.resolved_secret_key.encode())


def _seal(settings: Settings, account: Account, secret: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key(settings)).encrypt(nonce, secret.encode(), account.id.bytes)
    return f"{_ENVELOPE}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def _open(settings: Settings, account: Account) -> str:
    envelope = account.totp_secret or ""
    version, _, body = envelope.partition(":")
    if version != _ENVELOPE:
        raise ValueError("no two-factor secret")
    raw = base64.urlsafe_b64decode(body)
    return AESGCM(_key(settings)).decrypt(raw[:12], raw[12:], account.id.bytes).decode()


# --- state --------------------------------------------------------------------------------


def enabled(account: Account) -> bool:
    return account.totp_enabled_at is not None


def is_staff(session: Session, account: Account) -> bool:
    """Administrators and organization owners (whom the operator may require it of)."""
    if account.is_admin:
        return True
    return (
        session.scalar(
            select(Membership.id)
            .where(Membership.account_id == account.id, Membership.role == "owner")
            .limit(1)
        )
        is not None
    )


def required_but_missing(session: Session, settings: Settings, account: Account) -> bool:
    """Whether this account must set up two-factor sign-in before doing anything else."""
    return (
        settings.two_factor_required_for_staff
        and not enabled(account)
        and is_staff(session, account)
    )


def recovery_codes_left(session: Session, account: Account) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(RecoveryCodeTable)
            .where(RecoveryCodeTable.account_id == account.id, RecoveryCodeTable.used_at.is_(None))
        )
        or 0
    )


# --- enrolment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    secret: str  # base32, for typing into an app
    uri: str  # otpauth://
    qr_svg: str  # the URI as an inline SVG QR code


def begin(session: Session, *, settings: Settings, account: Account) -> Enrolment:
    """A new secret awaiting confirmation (replacing an unconfirmed one). Refused while
    two-factor sign-in is on: turn it off first."""
    if enabled(account):
        raise Conflict("Two-factor sign-in is already on", code="two_factor_enabled")
    secret = pyotp.random_base32(32)
    account.totp_secret = _seal(settings, account, secret)
    account.totp_last_step = None
    session.flush()
    return enrolment(settings, account)


def enrolment(settings: Settings, account: Account) -> Enrolment:
    """The pending enrolment's secret, otpauth URI and QR code (to show it again)."""
    secret = _open(settings, account)
    issuer = urlsplit(settings.public_url).hostname or "Store"
    uri = pyotp.TOTP(secret).provisioning_uri(name=account.username, issuer_name=issuer)
    import segno  # on first use (≈ 1 MiB per worker otherwise)

    qr = segno.make(uri, error="m")
    svg = qr.svg_inline(scale=4, dark="#000", light="#fff", title="QR code")
    return Enrolment(secret=secret, uri=uri, qr_svg=svg)


def confirm(
    session: Session,
    *,
    settings: Settings,
    account: Account,
    code: str,
    password: str,
    keep: uuid.UUID | None = None,
) -> list[str]:
    """Turn two-factor sign-in on with a code from the pending secret and the current
    password; the recovery codes. Every web session of the account but ``keep`` (the
    browser turning it on) ends: they were made with the password alone.

    The password, because a session alone (a stolen cookie) must not put the account
    behind a second factor its owner does not hold."""
    if enabled(account):
        raise Conflict("Two-factor sign-in is already on", code="two_factor_enabled")
    if not account.totp_secret:
        raise Conflict("Start the set-up first", code="no_two_factor_enrolment")
    _check_password(account, password)
    if not _accept_totp(session, settings, account, code):
        raise BadCode()
    account.totp_enabled_at = utcnow()
    # The password alone no longer signs in: registry log-ins kept from it end now
    # (store.registry.refresh refuses them while two-factor sign-in is on as well). The
    # account row is written first: a password log-in's refresh token made at this instant
    # (under a lock of the row) is then either seen by the revocation or refused.
    session.flush()
    accounts.revoke_refresh_tokens(
        session,
        and_(AccessToken.account_id == account.id, AccessToken.source_kind == "password"),
        account.totp_enabled_at,
    )
    sessions.end_all_sessions(session, account, reason="two_factor", keep=keep)
    codes = _new_recovery_codes(session, account)
    audit.record(session, action="account.two_factor_on", actor=account, target=account)
    session.flush()
    return codes


def _check_password(account: Account, password: str) -> None:
    if not security.verify_password(account.password_hash, password):
        raise ValidationFailed(
            "The current password is not correct", code="wrong_password", field="current_password"
        )


def disable(
    session: Session,
    *,
    settings: Settings,
    account: Account,
    code: str,
    password: str,
    keep: uuid.UUID | None = None,
) -> None:
    """Turn two-factor sign-in off with the current password and a current code or a
    recovery code. Every web session of the account but ``keep`` (the browser turning it
    off) ends, and the owner is mailed.

    The password, because a session and a code alone (a stolen cookie, a code seen once)
    must not take the second factor away; the other sessions end because they may be the
    thief's, as turning it on ends those the password alone made."""
    if not enabled(account):
        raise Conflict("Two-factor sign-in is not on", code="two_factor_disabled")
    _check_password(account, password)  # first: a wrong password spends no code
    verify(session, settings=settings, account=account, code=code)
    account.totp_secret = None
    account.totp_enabled_at = None
    account.totp_last_step = None
    session.execute(delete(RecoveryCodeTable).where(RecoveryCodeTable.account_id == account.id))
    sessions.end_all_sessions(session, account, reason="two_factor_off", keep=keep)
    audit.record(session, action="account.two_factor_off", actor=account, target=account)
    links.two_factor_off_notice(session, settings=settings, account=account)
    session.flush()


def regenerate_codes(
    session: Session, *, settings: Settings, account: Account, code: str
) -> list[str]:
    """Ten new recovery codes (the old ones stop working); needs a current code."""
    if not enabled(account):
        raise Conflict("Two-factor sign-in is not on", code="two_factor_disabled")
    verify(session, settings=settings, account=account, code=code)
    return _new_recovery_codes(session, account)


# --- checking a code ------------------------------------------------------------------------


def verify(session: Session, *, settings: Settings, account: Account, code: str) -> str:
    """Accept a current TOTP code or an unused recovery code, once: "totp" or "recovery";
    :class:`BadCode` otherwise."""
    cleaned = "".join(code.split()).lower()
    if cleaned.isdigit() and len(cleaned) == 6:
        if enabled(account) and _accept_totp(session, settings, account, cleaned):
            return "totp"
        raise BadCode()
    if enabled(account) and len(cleaned) <= 32 and _use_recovery_code(session, account, cleaned):
        audit.record(session, action="account.recovery_code_used", actor=account, target=account)
        return "recovery"
    raise BadCode()


def _accept_totp(
    session: Session, settings: Settings, account: Account, code: str, now: datetime | None = None
) -> bool:
    cleaned = "".join(code.split())
    if not (cleaned.isdigit() and len(cleaned) == 6) or not account.totp_secret:
        return False
    totp = pyotp.TOTP(_open(settings, account))
    at = now or utcnow()
    current = totp.timecode(at)
    for step in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), cleaned):
            # Each step once: a conditional UPDATE, so a replay (or a race) loses.
            result = session.execute(
                update(Account)
                .where(
                    Account.id == account.id,
                    or_(Account.totp_last_step.is_(None), Account.totp_last_step < step),
                )
                .values(totp_last_step=step)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) == 1:
                account.totp_last_step = step
                session.expire(account, ["totp_last_step"])
                return True
            return False
    return False


def _hash_code(account: Account, code: str) -> str:
    return hashlib.sha256(account.id.bytes + code.encode()).hexdigest()


def _new_recovery_codes(session: Session, account: Account) -> list[str]:
    session.execute(delete(RecoveryCodeTable).where(RecoveryCodeTable.account_id == account.id))
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    for code in codes:
        session.add(RecoveryCodeTable(account_id=account.id, code_hash=_hash_code(account, code)))
    session.flush()
    return codes


def _use_recovery_code(session: Session, account: Account, code: str) -> bool:
    normalised = code if "-" in code else f"{code[:5]}-{code[5:]}"
    result = session.execute(
        update(RecoveryCodeTable)
        .where(
            RecoveryCodeTable.account_id == account.id,
            RecoveryCodeTable.code_hash == _hash_code(account, normalised),
            RecoveryCodeTable.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1
