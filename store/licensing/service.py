"""License documents: issuing, re-issuing, the .lic file, public keys and revocation lists.

A license is a compact JWS (EdDSA, ``typ`` ``store-license+jws``) over a versioned payload.
Payload version 1, fields in this fixed order (fields are only ever appended; a field that
does not apply is omitted, never renamed)::

    v            1
    lid          license id (UUID; also the registry username)
    iss          the store's public URL
    sub          {type: account|organization, id, name}
    product      {id, repository, kind, title}
    tier         {slug, name}
    features     [str, ...]
    seats        int, or null for unlimited
    iat, nbf     issued-at and not-before (integer Unix seconds)
    exp          end of the entitlement (omitted: perpetual)
    grace_until  end of the grace period (omitted: none)
    ent          entitlement id
    isid         the issuer's stable id (STORE_LICENSE_ISSUER_ID; the same after a change of
                 public URL, which changes iss); revocation lists carry it too

Old documents are never changed: a renewal or any other change of terms issues a new one,
and older ones stay valid until their own ``exp`` unless the entitlement is revoked.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import AccessToken
from store.config import Settings
from store.db import lock_row, utcnow
from store.errors import Conflict, NotFound
from store.keys import crypto
from store.keys import service as keys
from store.keys.models import SigningKey
from store.keys.service import KeyRing, LoadedKey
from store.licensing import verify
from store.licensing.models import Entitlement, License
from store.licensing.signer import LicenseSigner

PAYLOAD_VERSION = 1
# Revocation lists promise a fresh copy within this time (their next_update).
REVOCATIONS_VALIDITY = timedelta(hours=1)
# A process rebuilds its signed list at most this often, unless it revoked something itself.
REVOCATIONS_CACHE_SECONDS = 30.0
# Revoked licenses that expired longer ago than this are left off the list (they fail on
# their dates anyway; grace periods are far shorter).
REVOCATIONS_RETENTION = timedelta(days=366)


def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _licensee(entitlement: Entitlement) -> dict[str, Any]:
    account = entitlement.account
    if account is not None:
        return {
            "type": "account",
            "id": account.id,
            "name": account.display_name or account.username,
        }
    org = entitlement.organization
    assert org is not None, "an entitlement belongs to an account or an organization"
    return {"type": "organization", "id": org.id, "name": org.name}


def license_payload(
    entitlement: Entitlement,
    *,
    license_id: uuid.UUID,
    issuer: str,
    now: datetime,
    issuer_id: str = "",
) -> dict[str, Any]:
    """The version 1 payload for ``entitlement`` (see the module docstring for the fields).

    Ids are left as UUIDs: the JSON encoder writes them as canonical strings, faster than
    ``str()`` here. Decode a signed token to get the payload as verifiers see it."""
    product, tier = entitlement.product, entitlement.tier
    ends_at, grace_until = entitlement.ends_at, entitlement.grace_until
    payload: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "lid": license_id,
        "iss": issuer,
        "sub": _licensee(entitlement),
        "product": {
            "id": product.id,
            "repository": product.repository,
            "kind": product.kind,
            "title": product.title,
        },
        "tier": {"slug": tier.slug, "name": tier.name},
        "features": list(entitlement.features),
        "seats": entitlement.seats,
        "iat": int(now.timestamp()),
        "nbf": int(entitlement.starts_at.timestamp()),
    }
    if ends_at is not None:
        payload["exp"] = int(ends_at.timestamp())
    if grace_until is not None:
        payload["grace_until"] = int(grace_until.timestamp())
    payload["ent"] = entitlement.id
    if issuer_id:
        payload["isid"] = issuer_id
    return payload


_headers: dict[tuple[str, str], bytes] = {}


def _encoded_header(kid: str, typ: str) -> bytes:
    # The header only changes with the key, so it is encoded once per key and type.
    encoded = _headers.get((kid, typ))
    if encoded is None:
        header = {"alg": verify.ALG, "typ": typ, "kid": kid}
        encoded = base64.urlsafe_b64encode(orjson.dumps(header)).rstrip(b"=")
        if len(_headers) > 64:
            _headers.clear()
        _headers[(kid, typ)] = encoded
    return encoded


def sign(key: LoadedKey, payload: dict[str, Any], typ: str = verify.LICENSE_TYP) -> str:
    """A compact JWS (EdDSA) of ``payload``, with the key's ``kid`` and the given ``typ``."""
    if not isinstance(key.private_key, ed25519.Ed25519PrivateKey):
        raise TypeError("license documents are signed with Ed25519 keys")
    # orjson: compact UTF-8 JSON in insertion order, several times faster than json.dumps.
    body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
    signing_input = _encoded_header(key.kid, typ) + b"." + body
    signature = base64.urlsafe_b64encode(key.private_key.sign(signing_input)).rstrip(b"=")
    return (signing_input + b"." + signature).decode("ascii")


def decode_payload(token: str) -> dict[str, Any]:
    """The payload of a token this store issued, without verifying it (for display only)."""
    return dict(json.loads(crypto.b64url_decode(token.split(".")[1])))


def _terms(payload: dict[str, Any]) -> tuple[Any, ...]:
    """What a license grants; a change in any of these calls for a new document."""
    return (
        payload["sub"]["type"],
        str(payload["sub"]["id"]),
        str(payload["product"]["id"]),
        payload["tier"]["slug"],
        tuple(payload.get("features", ())),
        payload.get("seats"),
        payload.get("nbf"),
        payload.get("exp"),
        payload.get("grace_until"),
    )


# --- issuing ------------------------------------------------------------------------------


def signing_key(
    session: Session, keyring: KeyRing, settings: Settings, *, lock: bool = False
) -> LoadedKey:
    """The license key that signs now (the key ring's, parsed once per process).

    The key ring looks again at which key signs only every few seconds; a key retired
    meanwhile (by another process) is never used: it is checked here, and the key ring
    looks again at once. ``lock``: the key's row is share-locked until the transaction
    ends (issuing), so a retirement committing at the same instant waits for the document
    to be signed, and the next request replaces it (:func:`current_license`)."""
    if keys.current_key(session, "license") is None:
        # The very first license key is made in this unit of work: made by the key ring on
        # its own connection, it would wait for this one's write lock under SQLite.
        secret = settings.resolved_secret_key
        return keys.load(
            keys.create_key(session, purpose="license", secret=secret, activate=True), secret
        )
    for _ in range(3):
        loaded = keyring.signer("license")
        if lock:
            row = lock_row(session, SigningKey, loaded.kid, mode="share")
        else:
            row = session.get(SigningKey, loaded.kid, populate_existing=True)
        if row is not None and row.retired_at is None:
            return loaded
        keyring.invalidate("license")
    raise Conflict("The license signing key changed several times; try again", code="busy")


def _trusted(session: Session, kid: str) -> bool:
    key = session.get(SigningKey, kid)
    return key is not None and key.retired_at is None


def issue_license(
    session: Session,
    keyring: KeyRing,
    settings: Settings,
    entitlement: Entitlement,
    *,
    now: datetime | None = None,
) -> License:
    """Sign a new license document for the entitlement's current terms (a new row every time)."""
    # The entitlement's row locked and read again first: a revocation committing meanwhile
    # (a refund, a lost dispute) revokes the licenses that exist when it runs, so one
    # signed from an older read would outlive it.
    lock_row(session, Entitlement, entitlement.id)
    if entitlement.status == "revoked":
        raise Conflict("This entitlement was revoked; no license is issued for it", code="revoked")
    now = now or utcnow()
    key = signing_key(session, keyring, settings, lock=True)
    license_id = uuid.uuid4()
    payload = license_payload(
        entitlement,
        license_id=license_id,
        issuer=settings.public_url,
        now=now,
        issuer_id=settings.resolved_license_issuer_id,
    )
    document = License(
        id=license_id,
        entitlement_id=entitlement.id,
        kid=key.kid,
        token=sign(key, payload),
        issued_at=now,
        not_before=entitlement.starts_at,
        expires_at=entitlement.ends_at,
    )
    session.add(document)
    session.flush()
    from store.mail import notices

    notices.license_issued(session, settings, document=document, entitlement=entitlement)
    return document


def licenses_of(session: Session, entitlement: Entitlement) -> list[License]:
    """Every license issued for the entitlement, newest first."""
    return list(
        session.scalars(
            select(License)
            .where(License.entitlement_id == entitlement.id)
            .order_by(License.issued_at.desc())
        )
    )


def _latest_unrevoked(session: Session, entitlement: Entitlement) -> License | None:
    return session.scalar(
        select(License)
        .where(License.entitlement_id == entitlement.id, License.revoked_at.is_(None))
        .order_by(License.issued_at.desc())
        .limit(1)
    )


def is_current(document: License, entitlement: Entitlement) -> bool:
    """Whether the document grants exactly the entitlement's present terms."""
    fresh = license_payload(entitlement, license_id=document.id, issuer="", now=utcnow())
    return _terms(decode_payload(document.token)) == _terms(fresh)


def current_license(
    session: Session, keyring: KeyRing, settings: Settings, entitlement: Entitlement
) -> License:
    """The newest unrevoked license matching the entitlement's terms and signed by a key
    that is not retired, issued now if needed.

    An entitlement that is not active (suspended, expired) gets its last license back but no
    new one; a revoked entitlement has none.
    """
    if entitlement.status == "revoked":
        raise Conflict("This entitlement was revoked, and its licenses with it", code="revoked")
    latest = _latest_unrevoked(session, entitlement)
    if entitlement.status != "active":
        if latest is None:
            raise Conflict(f"This entitlement is {entitlement.status}", code=entitlement.status)
        return latest
    if latest is not None and is_current(latest, entitlement) and _trusted(session, latest.kid):
        return latest
    # None yet, other terms, or signed by a key since retired (which verifiers no longer
    # trust): a new document.
    return issue_license(session, keyring, settings, entitlement)


def get_license(session: Session, license_id: uuid.UUID) -> License:
    document = session.get(License, license_id)
    if document is None:
        raise NotFound("No such license")
    return document


def revoke_licenses(session: Session, entitlement: Entitlement, *, reason: str) -> int:
    """Revoke every license of the entitlement that is not revoked yet, and the registry
    refresh tokens made from them; returns how many licenses.

    The license rows are updated first, then the refresh tokens by a later statement: a
    refresh token made from one of them at the same instant (store.registry.refresh, under
    a lock of the license row) is either found by it or refused."""
    now = utcnow()
    result = session.execute(
        update(License)
        .where(License.entitlement_id == entitlement.id, License.revoked_at.is_(None))
        .values(revoked_at=now, revocation_reason=reason)
        .execution_options(synchronize_session="fetch")
    )
    accounts.revoke_refresh_tokens(
        session,
        AccessToken.source_license_id.in_(
            select(License.id).where(
                License.entitlement_id == entitlement.id, License.revoked_at.is_not(None)
            )
        ),
        now,
    )
    _revocations_changed()
    return int(getattr(result, "rowcount", 0) or 0)


def reissue_if_changed(
    session: Session, entitlement: Entitlement, signer: LicenseSigner | None
) -> License | None:
    """After a change of terms (renewal, extension, grace): issue a new document when the
    entitlement already has one and the caller gave a signer. Without one the next request
    for the license issues it lazily."""
    if entitlement.status != "active" or signer is None:
        return None
    latest = _latest_unrevoked(session, entitlement)
    if latest is None or is_current(latest, entitlement):
        return None
    return issue_license(session, signer.keyring, signer.settings, entitlement)


# --- the .lic file ----------------------------------------------------------------------------


def _date(ts: int | None, empty: str) -> str:
    if ts is None:
        return empty
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def license_file(document: License) -> tuple[str, str]:
    """``(filename, text)`` of the downloadable ``.lic``: a readable header (``#`` lines, for
    people; verifiers ignore it) and the token on the last line."""
    claims = decode_payload(document.token)
    product, sub, tier = claims["product"], claims["sub"], claims["tier"]
    lines = [
        "# Store license. The last line is the signed license; the lines above are a summary.",
        f"# Product:     {product['title']} ({product['repository']}, {product['kind']})",
        f"# Tier:        {tier['name']} ({tier['slug']})",
        f"# Licensee:    {sub['name']} ({sub['type']} {sub['id']})",
        f"# License id:  {claims['lid']}",
        f"# Issued:      {_date(claims['iat'], '-')}",
        f"# Valid from:  {_date(claims['nbf'], '-')}",
        f"# Expires:     {_date(claims.get('exp'), 'never (perpetual)')}",
    ]
    if "grace_until" in claims:
        lines.append(f"# Grace until: {_date(claims['grace_until'], '-')}")
    lines += [f"# Issuer:      {claims['iss']}", "", document.token, ""]
    name = product["repository"].replace("/", "-")
    return f"{name}-{str(document.id)[:8]}.lic", "\n".join(lines)


# --- public keys --------------------------------------------------------------------------------


def jwks(session: Session, keyring: KeyRing, settings: Settings) -> dict[str, Any]:
    """Every license key that is not retired, as a JWKS (the signing key first exists)."""
    signing_key(session, keyring, settings)
    entries = []
    for key in keys.trusted_keys(session, "license"):
        jwk = crypto.public_jwk(crypto.load_public_pem(key.public_pem))
        entries.append({**jwk, "kid": key.kid, "alg": key.alg, "use": "sig"})
    # Extra JWKS members (RFC 7517 §5) naming the issuer, so that the document is all a
    # verifier's trust file needs (store license trust add).
    return {
        "issuer": settings.public_url,
        "issuer_id": settings.resolved_license_issuer_id,
        "keys": entries,
    }


def public_keys(session: Session, keyring: KeyRing, settings: Settings) -> list[dict[str, Any]]:
    """Every license key that is not retired, with its PEM and whether it signs now."""
    signing = signing_key(session, keyring, settings).kid
    return [
        {
            "kid": key.kid,
            "alg": key.alg,
            "public_pem": key.public_pem,
            "created_at": key.created_at,
            "activated_at": key.activated_at,
            "signing": key.kid == signing,
        }
        for key in keys.trusted_keys(session, "license")
    ]


# --- revocation lists ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRevocations:
    jws: str
    claims: dict[str, Any]
    built_at: float
    generation: tuple[int, int]


_generation = 0
# The registry's decision generation (migration 0750): its triggers bump it at the commit of
# every entitlement status change, so a revocation committed by any process (another
# worker, the command line) makes the next list be rebuilt. Read as text: the licensing
# layer sits below the registry's models.
_DB_GENERATION = text("SELECT value FROM registry_decision_generation WHERE id = 1")
_cache_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[KeyRing, SignedRevocations] = weakref.WeakKeyDictionary()


def _revocations_changed() -> None:
    global _generation
    with _cache_lock:
        _generation += 1


def revocation_list(
    session: Session, keyring: KeyRing, settings: Settings, *, now: datetime | None = None
) -> SignedRevocations:
    """The signed list of revoked licenses, rebuilt at most every few seconds per process,
    and at once after a revocation committed by any process (the decision generation)."""
    explicit_time = now is not None
    cached = _cache.get(keyring)
    generation = (_generation, int(session.scalar(_DB_GENERATION) or 0))
    if (
        not explicit_time
        and cached is not None
        and cached.generation == generation
        and time.monotonic() - cached.built_at < REVOCATIONS_CACHE_SECONDS
    ):
        return cached
    now = now or utcnow()
    revoked = session.scalars(
        select(License.id)
        .where(
            License.revoked_at.is_not(None),
            or_(License.expires_at.is_(None), License.expires_at > now - REVOCATIONS_RETENTION),
        )
        .order_by(License.id)
    )
    claims = {
        "v": 1,
        "iss": settings.public_url,
        "isid": settings.resolved_license_issuer_id,
        "iat": _ts(now),
        "next_update": _ts(now + REVOCATIONS_VALIDITY),
        "revoked": [str(lid) for lid in revoked],
    }
    signed = SignedRevocations(
        jws=sign(signing_key(session, keyring, settings), claims, verify.REVOCATIONS_TYP),
        claims=claims,
        built_at=time.monotonic(),
        generation=generation,
    )
    if not explicit_time:
        _cache[keyring] = signed
    return signed
