"""A license as a registry credential: ``docker login <store> -u <license id> -p <token>``.

The registry token endpoint calls :func:`resolve_license_credential` when the Basic-auth
username is ``license`` or a license id (see :func:`is_license_username`). The token's
signature is checked against the store's own trusted license keys (parsed once per process),
then one primary-key query reads the license's revocation and its entitlement.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.config import Settings
from store.db import utcnow
from store.errors import Unauthorized
from store.keys import crypto
from store.keys import service as keys
from store.keys.models import SigningKey
from store.keys.service import KeyRing
from store.licensing import verify
from store.licensing.models import Entitlement, License

LICENSE_USERNAME = "license"
# Trusted keys are re-read this often (a retirement elsewhere takes effect within it), and at
# once when a token names a key the database trusts but this process has not loaded yet.
KEYS_REFRESH_SECONDS = 60.0
# Tokens whose signature verified, so that every docker pull does not pay for Ed25519 again
# (≈ 150 µs); dates, revocation and the entitlement are checked on every call.
VERIFIED_CACHE_SIZE = 4096

_lock = threading.Lock()
# Per key ring, i.e. per application (tests make many): parsed public keys and when read.
_verifiers: weakref.WeakKeyDictionary[object, tuple[float, verify.Verifier]] = (
    weakref.WeakKeyDictionary()
)


def is_license_username(username: str) -> bool:
    """``license``, or a license id (a UUID): the password is then a license token."""
    if username == LICENSE_USERNAME:
        return True
    if len(username) < 32:  # shorter than any UUID's text: no exception to raise and catch
        return False
    try:
        uuid.UUID(username)
    except ValueError:
        return False
    return True


def _load_verifier(session: Session) -> verify.Verifier:
    entries = []
    for key in keys.trusted_keys(session, "license"):
        jwk = crypto.public_jwk(crypto.load_public_pem(key.public_pem))
        entries.append({**jwk, "kid": key.kid, "alg": key.alg})
    return verify.Verifier({"keys": entries}, cache_size=VERIFIED_CACHE_SIZE)


class _NoKeyRing:
    """Cache slot for callers without a key ring (keys come from the session either way)."""


_NO_KEYRING = _NoKeyRing()


def _verifier(
    session: Session, keyring: KeyRing | None, *, reload: bool = False
) -> verify.Verifier:
    slot: object = keyring if keyring is not None else _NO_KEYRING
    cached = _verifiers.get(slot)
    if not reload and cached is not None and time.monotonic() - cached[0] < KEYS_REFRESH_SECONDS:
        return cached[1]
    with _lock:
        loaded = _load_verifier(session)
        _verifiers[slot] = (time.monotonic(), loaded)
    return loaded


def _newly_trusted(session: Session, kid: str | None) -> bool:
    if not kid:
        return False
    key = session.get(SigningKey, kid)
    return key is not None and key.purpose == "license" and key.retired_at is None


def _reject(reason: str, code: str) -> Unauthorized:
    return Unauthorized(reason, code=code)


_VERDICT_CODES = {
    verify.VERDICT_EXPIRED: "license_expired",
    verify.VERDICT_NOT_YET_VALID: "license_not_yet_valid",
    verify.VERDICT_REVOKED: "license_revoked",
}


def resolve_license_credential(
    session: Session,
    keyring: KeyRing | None,
    settings: Settings,
    username: str,
    password: str,
    *,
    now: datetime | None = None,
) -> Entitlement:
    """The entitlement a license token stands for (see :func:`resolve_license`)."""
    return resolve_license(session, keyring, settings, username, password, now=now)[1]


def resolve_license(
    session: Session,
    keyring: KeyRing | None,
    settings: Settings,
    username: str,
    password: str,
    *,
    now: datetime | None = None,
) -> tuple[uuid.UUID, Entitlement]:
    """The license id and the entitlement a license token stands for, or
    :class:`Unauthorized` saying why.

    Accepts licenses that are valid or in their grace period, not revoked, whose
    entitlement is still usable; ``username`` must be ``license`` or the license's own id.
    """
    now = now or utcnow()
    token = password.strip()
    verifier = _verifier(session, keyring)
    result = verifier.verify(token, now=now.timestamp())
    if result.verdict == verify.VERDICT_UNKNOWN_KEY and _newly_trusted(session, result.kid):
        # A key rotated in (perhaps by another process) since this one read the keys; made-up
        # key ids cost one primary-key lookup, never a reload.
        verifier = _verifier(session, keyring, reload=True)
        result = verifier.verify(token, now=now.timestamp())
    if not result.usable or result.claims is None:
        code = _VERDICT_CODES.get(result.verdict, "bad_license")
        raise _reject(f"The license is not accepted: {result.reason}", code)
    claims = result.claims
    # The issuer id survives a change of public URL; licenses without one name the URL.
    isid = claims.get("isid")
    if isid != settings.resolved_license_issuer_id and (
        isid is not None or claims["iss"] != settings.public_url
    ):
        issuer = isid or claims["iss"]
        raise _reject(f"The license was issued by {issuer}, not this store", "bad_license")
    if username != LICENSE_USERNAME and username.lower() != claims["lid"].lower():
        raise _reject("The username must be 'license' or the license id", "bad_license")
    try:
        license_id = uuid.UUID(claims["lid"])
    except ValueError:
        raise _reject("The license id is not valid", "bad_license") from None
    row = session.execute(
        select(License.revoked_at, License.revocation_reason, Entitlement)
        .join(Entitlement, Entitlement.id == License.entitlement_id)
        .where(License.id == license_id)
    ).first()
    if row is None:
        raise _reject("This store has no record of the license", "bad_license")
    revoked_at, revocation_reason, entitlement = row
    if revoked_at is not None:
        detail = f": {revocation_reason}" if revocation_reason else ""
        raise _reject(f"The license was revoked{detail}", "license_revoked")
    state = entitlement.effective_status(now)
    if state not in ("active", "grace"):
        raise _reject(f"The entitlement behind the license is {state}", f"license_{state}")
    if str(entitlement.product_id) != claims["product"]["id"]:
        raise _reject("The license is for another product", "bad_license")
    return license_id, entitlement
