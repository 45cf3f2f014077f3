"""Signatures over image digests: upload and verification, and each tag's signing status.

A signature counts while its key is not revoked: revoking a key makes everything it signed
unsigned from that moment on, and a signature uploaded after the revocation is refused.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.audit import service as audit
from store.catalog.models import Product
from store.config import Settings
from store.db import lock_row, utcnow
from store.errors import NotFound, ValidationFailed
from store.registry.models import HubRepository, HubTag
from store.registry.scopes import valid_repository
from store.signing import verify
from store.signing.models import (
    CertificationRequest,
    ContentSignature,
    PublisherKey,
    UnsignedPushFlag,
)
from store.signing.verify import SignatureRejected


def _namespace(repository: str) -> str:
    return repository.partition("/")[0]


def upload_signature(
    session: Session,
    *,
    org: Organization,
    uploader: Account | str,
    repository: str,
    digest: str,
    payload_b64: str,
    signature_b64: str,
    registry_host: str,
    tag: str | None = None,
    key_fingerprint: str | None = None,
) -> ContentSignature:
    """Verify a signature against the organization's keys and record it.

    The caller has already checked that ``uploader`` may act for ``org``. Raises
    SignatureRejected with a stable code: ``wrong_namespace``, ``unknown_key``,
    ``key_revoked``, ``bad_signature``, ``bad_payload``, ``wrong_digest``,
    ``wrong_repository``. Uploading the same signature twice returns the first record.
    """
    repository = repository.strip().lower()
    if not valid_repository(repository) or "/" not in repository:
        raise ValidationFailed("The repository must be <namespace>/<name>", code="bad_repository")
    if _namespace(repository) != org.slug:
        raise SignatureRejected(
            f"{repository} is not in the namespace of {org.slug}", code="wrong_namespace"
        )
    if tag is not None and not 0 < len(tag) <= 128:
        raise ValidationFailed("The tag must be 1 to 128 characters", code="bad_tag")
    payload = verify.b64decode(payload_b64, what="payload")
    signature = verify.b64decode(signature_b64, what="signature")
    key = _signing_key(session, org, payload, signature, key_fingerprint)
    verify.verify(
        verify.load_public_key(key.public_pem).key,
        payload=payload,
        signature=signature,
        repository=repository,
        digest=digest,
        registry_host=registry_host,
        tag=tag,
    )
    existing = session.scalar(
        select(ContentSignature).where(
            ContentSignature.key_id == key.id,
            ContentSignature.repository == repository,
            ContentSignature.digest == digest,
        )
    )
    if existing is not None:
        return existing
    product = session.scalar(select(Product).where(Product.repository == repository))
    record = ContentSignature(
        key_id=key.id,
        repository=repository,
        product_id=product.id if product else None,
        digest=digest,
        tag=tag,
        payload=payload_b64.strip(),
        signature=signature_b64.strip(),
        uploaded_by=(uploader.username if isinstance(uploader, Account) else uploader)[:128],
    )
    session.add(record)
    session.flush()
    _resolve_flags(session, repository=repository, digest=digest, resolution="signed")
    audit.record(
        session,
        action="signature.add",
        actor=uploader,
        target=record,
        org=org,
        details={
            "repository": repository,
            "digest": digest,
            "tag": tag,
            "key": key.fingerprint,
        },
    )
    return record


def _signing_key(
    session: Session,
    org: Organization,
    payload: bytes,
    signature: bytes,
    key_fingerprint: str | None,
) -> PublisherKey:
    """The organization's key that made ``signature``; revoked keys are named as such."""
    stmt = select(PublisherKey).where(PublisherKey.organization_id == org.id)
    if key_fingerprint:
        stmt = stmt.where(PublisherKey.fingerprint == key_fingerprint.strip().lower())
    candidates = list(session.scalars(stmt.order_by(PublisherKey.created_at)))
    if not candidates:
        what = f"key {key_fingerprint}" if key_fingerprint else "signing key"
        raise SignatureRejected(f"{org.slug} has no such registered {what}", code="unknown_key")
    for key in candidates:
        if verify.check_signature(verify.load_public_key(key.public_pem).key, payload, signature):
            # Share-locked and read again: a revocation committing at this instant is waited
            # for and refuses the signature; one that comes later waits for it to commit.
            lock_row(session, PublisherKey, key.id, mode="share")
            if key.revoked_at is not None:
                raise SignatureRejected(
                    f"Key {key.fingerprint[:16]}… was revoked on "
                    f"{key.revoked_at:%Y-%m-%d %H:%M} UTC",
                    code="key_revoked",
                )
            return key
    raise SignatureRejected(
        f"The signature does not verify with any registered key of {org.slug} over this payload",
        code="bad_signature",
    )


# --- status ---------------------------------------------------------------------------


def valid_signatures(
    session: Session, repository: str, digests: Iterable[str], *, at: datetime | None = None
) -> dict[str, list[ContentSignature]]:
    """The signatures of each digest that count at ``at`` (now): their key is not revoked."""
    digests = set(digests)
    if not digests:
        return {}
    at = at or utcnow()
    rows = session.scalars(
        select(ContentSignature)
        .join(PublisherKey, PublisherKey.id == ContentSignature.key_id)
        .where(
            ContentSignature.repository == repository,
            ContentSignature.digest.in_(digests),
            or_(PublisherKey.revoked_at.is_(None), PublisherKey.revoked_at > at),
        )
        .order_by(ContentSignature.created_at)
    )
    found: dict[str, list[ContentSignature]] = defaultdict(list)
    for sig in rows:
        found[sig.digest].append(sig)
    return dict(found)


def is_signed(session: Session, repository: str, digest: str) -> bool:
    return bool(valid_signatures(session, repository, [digest]).get(digest))


def signatures_of(session: Session, repository: str, digest: str) -> list[ContentSignature]:
    """Every recorded signature of a digest, revoked keys' included (for review pages)."""
    if not verify.DIGEST.match(digest):
        raise ValidationFailed("The digest must be sha256:<64 hex digits>", code="bad_digest")
    return list(
        session.scalars(
            select(ContentSignature)
            .where(ContentSignature.repository == repository, ContentSignature.digest == digest)
            .order_by(ContentSignature.created_at)
        )
    )


@dataclass
class TagStatus:
    tag: str
    digest: str
    pushed_at: datetime
    pushed_by: str
    signers: list[str] = field(default_factory=list)  # key labels or fingerprints
    certified: bool = False
    flagged: bool = False

    @property
    def signed(self) -> bool:
        return bool(self.signers)

    @property
    def status(self) -> str:
        if self.certified:
            return "certified"
        return "signed" if self.signed else "unsigned"


def certified_digest(session: Session, product: Product) -> str | None:
    """The digest the product's certified badge is tied to (None when not certified)."""
    if not product.certified:
        return None
    return session.scalar(
        select(CertificationRequest.certified_digest)
        .where(
            CertificationRequest.product_id == product.id,
            CertificationRequest.status == "approved",
        )
        .order_by(CertificationRequest.decided_at.desc())
        .limit(1)
    )


def tag_statuses(session: Session, product: Product) -> list[TagStatus]:
    """Every tag of the product's repository with its digest and signing status. A tag is
    certified only while it points at the certified digest and that digest is signed."""
    repo = session.scalar(select(HubRepository).where(HubRepository.name == product.repository))
    if repo is None:
        return []
    tags = list(
        session.scalars(
            select(HubTag)
            .where(HubTag.repository_id == repo.id)
            .order_by(HubTag.pushed_at.desc(), HubTag.name)
        )
    )
    valid = valid_signatures(session, product.repository, {t.digest for t in tags})
    certified = certified_digest(session, product)
    flagged = {
        (f.tag, f.digest)
        for f in session.scalars(
            select(UnsignedPushFlag).where(
                UnsignedPushFlag.product_id == product.id, UnsignedPushFlag.resolved_at.is_(None)
            )
        )
    }
    result = []
    for tag in tags:
        sigs = valid.get(tag.digest, [])
        result.append(
            TagStatus(
                tag=tag.name,
                digest=tag.digest,
                pushed_at=tag.pushed_at,
                pushed_by=tag.pushed_by,
                signers=[s.key.label or s.key.fingerprint[:16] for s in sigs],
                certified=bool(sigs) and tag.digest == certified,
                flagged=(tag.name, tag.digest) in flagged,
            )
        )
    return result


def tag_digest(session: Session, repository: str, tag: str) -> str | None:
    return session.scalar(
        select(HubTag.digest)
        .join(HubRepository, HubRepository.id == HubTag.repository_id)
        .where(HubRepository.name == repository, HubTag.name == tag)
    )


# --- unsigned pushes to certified products ---------------------------------------------


def list_flags(
    session: Session,
    *,
    org: Organization | None = None,
    product: Product | None = None,
    open_only: bool = True,
) -> list[UnsignedPushFlag]:
    stmt = select(UnsignedPushFlag).order_by(UnsignedPushFlag.created_at.desc())
    if product is not None:
        stmt = stmt.where(UnsignedPushFlag.product_id == product.id)
    if org is not None:
        stmt = stmt.join(Product, Product.id == UnsignedPushFlag.product_id).where(
            Product.organization_id == org.id
        )
    if open_only:
        stmt = stmt.where(UnsignedPushFlag.resolved_at.is_(None))
    return list(session.scalars(stmt))


def get_flag(session: Session, flag_id: uuid.UUID) -> UnsignedPushFlag:
    flag = session.get(UnsignedPushFlag, flag_id)
    if flag is None:
        raise NotFound("No such flag")
    return flag


def dismiss_flag(session: Session, *, flag: UnsignedPushFlag, actor: Account) -> UnsignedPushFlag:
    """Acknowledge an unsigned push (the publisher's owners or an administrator)."""
    accounts.require_role(session, actor, flag.product.organization, "owner")
    if flag.resolved_at is None:
        flag.resolved_at = utcnow()
        flag.resolution = "dismissed"
        session.flush()
        audit.record(
            session,
            action="push_flag.dismiss",
            actor=actor,
            target=flag,
            org=flag.product.organization_id,
            details={"repository": flag.repository, "tag": flag.tag, "digest": flag.digest},
        )
    return flag


def _resolve_flags(session: Session, *, repository: str, digest: str, resolution: str) -> None:
    session.execute(
        update(UnsignedPushFlag)
        .where(
            UnsignedPushFlag.repository == repository,
            UnsignedPushFlag.digest == digest,
            UnsignedPushFlag.resolved_at.is_(None),
        )
        .values(resolved_at=utcnow(), resolution=resolution)
    )


def registry_host(settings: Settings) -> str:
    """The host[:port] docker references name: the registry URL without its scheme."""
    return urlsplit(settings.registry_url).netloc
