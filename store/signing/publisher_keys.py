"""Publisher signing keys: organizations register public keys; owners add and revoke them."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import validation
from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.audit import service as audit
from store.db import lock_row, utcnow
from store.errors import Conflict, NotFound
from store.signing import certification
from store.signing.models import PublisherKey
from store.signing.verify import load_public_key


def add_key(
    session: Session, *, org: Organization, actor: Account, public_pem: str, label: str = ""
) -> PublisherKey:
    """Register the public half of a signing key (ECDSA P-256 or Ed25519, PEM). Owners only."""
    accounts.require_role(session, actor, org, "owner")
    loaded = load_public_key(public_pem)
    label = validation.text(label, what="Label", max_len=100)
    existing = session.scalar(
        select(PublisherKey).where(
            PublisherKey.organization_id == org.id, PublisherKey.fingerprint == loaded.fingerprint
        )
    )
    if existing is not None:
        state = "revoked" if existing.revoked_at else "registered"
        raise Conflict(
            f"This key is already {state} ({loaded.fingerprint[:16]}…)", code="key_exists"
        )
    key = PublisherKey(
        organization_id=org.id,
        alg=loaded.alg,
        public_pem=loaded.pem,
        fingerprint=loaded.fingerprint,
        label=label,
        created_by_id=actor.id,
    )
    try:
        with session.begin_nested():
            session.add(key)
            session.flush()
    except IntegrityError:
        # Registered at the same instant by another request (PostgreSQL): as a later one.
        raise Conflict(
            f"This key is already registered ({loaded.fingerprint[:16]}…)", code="key_exists"
        ) from None
    audit.record(
        session,
        action="signing_key.add",
        actor=actor,
        target=key,
        org=org,
        details={"fingerprint": key.fingerprint, "alg": key.alg, "label": key.label},
    )
    return key


def revoke_key(session: Session, *, key: PublisherKey, actor: Account) -> PublisherKey:
    """Revoke a key: signatures it made stop counting from now on, and it signs nothing new.
    A certification whose digest it alone signed ends with it (the certified badge goes).

    The key's row is locked first: a signature being recorded or a certification being
    approved with it at the same instant (they share-lock it) commits first, and the
    revocation then applies to it as to anything the key signed before."""
    accounts.require_role(session, actor, key.organization, "owner")
    lock_row(session, PublisherKey, key.id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.revoked_by_id = actor.id
        session.flush()
        ended = certification.end_unsigned(session, org=key.organization_id)
        audit.record(
            session,
            action="signing_key.revoke",
            actor=actor,
            target=key,
            org=key.organization_id,
            details={"fingerprint": key.fingerprint},
        )
        certification.record_ended(
            session, ended, actor=actor, reason=f"signing key {key.fingerprint} revoked"
        )
    return key


def list_keys(
    session: Session, org: Organization, *, include_revoked: bool = True
) -> list[PublisherKey]:
    stmt = (
        select(PublisherKey)
        .where(PublisherKey.organization_id == org.id)
        .order_by(PublisherKey.created_at.desc())
    )
    if not include_revoked:
        stmt = stmt.where(PublisherKey.revoked_at.is_(None))
    return list(session.scalars(stmt))


def get_key(session: Session, org: Organization, key_ref: uuid.UUID | str) -> PublisherKey:
    """A key of this organization by id or by (a unique prefix of) its fingerprint."""
    stmt = select(PublisherKey).where(PublisherKey.organization_id == org.id)
    if isinstance(key_ref, uuid.UUID):
        key = session.scalar(stmt.where(PublisherKey.id == key_ref))
    else:
        ref = key_ref.strip().lower()
        matches = (
            list(session.scalars(stmt.where(PublisherKey.fingerprint.startswith(ref))))
            if len(ref) >= 8
            else []
        )
        key = matches[0] if len(matches) == 1 else None
    if key is None:
        raise NotFound(f"No signing key '{key_ref}' in {org.slug}")
    return key
