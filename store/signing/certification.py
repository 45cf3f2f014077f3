"""Certification review: a publisher submits one version (tag and digest) of a product; an
administrator approves it, which ties the certified badge to that digest, or rejects it.

States: ``submitted`` → ``approved`` | ``rejected``; an approved request becomes
``superseded`` when a later one of the same product is approved. Approval needs the digest
signed by a key of the publisher that is not revoked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store import validation
from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.audit import service as audit
from store.catalog import service as catalog
from store.catalog.models import Product
from store.config import Settings
from store.db import lock_row, utcnow
from store.errors import Conflict, Forbidden, NotFound, ValidationFailed
from store.mail import notices
from store.signing import service as signing
from store.signing.models import CertificationRequest, PublisherKey, UnsignedPushFlag
from store.signing.verify import DIGEST

STATUSES = ("submitted", "approved", "rejected", "superseded")


def submit(
    session: Session, *, actor: Account, product: Product, tag: str, digest: str | None = None
) -> CertificationRequest:
    """Ask for review of ``tag`` (its current digest, or ``digest`` if the tag points there)."""
    accounts.require_role(session, actor, product.organization, "editor")
    tag = tag.strip()
    if not tag or len(tag) > 128:
        raise ValidationFailed("Tag: name the tag to certify", code="bad_tag")
    current = signing.tag_digest(session, product.repository, tag)
    digest = (digest or "").strip() or current
    if digest is None:
        raise NotFound(
            f"The registry has no tag '{tag}' in {product.repository}; push it first",
            code="unknown_tag",
        )
    if not DIGEST.match(digest):
        raise ValidationFailed("The digest must be sha256:<64 hex digits>", code="bad_digest")
    if current is not None and current != digest:
        raise Conflict(f"Tag '{tag}' now points to {current}, not {digest}", code="tag_moved")
    # Submissions of one product take turns (PostgreSQL row lock), so two sent at the same
    # instant cannot both find no pending one.
    lock_row(session, Product, product.id, mode="no_key_update", populate=False)
    if session.scalar(
        select(CertificationRequest.id).where(
            CertificationRequest.product_id == product.id,
            CertificationRequest.status == "submitted",
        )
    ):
        raise Conflict(
            f"A version of {product.repository} is already waiting for review",
            code="review_pending",
        )
    request = CertificationRequest(
        product_id=product.id, tag=tag, digest=digest, submitted_by_id=actor.id
    )
    session.add(request)
    session.flush()
    audit.record(
        session,
        action="certification.submit",
        actor=actor,
        target=request,
        org=product.organization_id,
        details={"product": product.repository, "tag": tag, "digest": digest},
    )
    return request


def get_request(session: Session, request_id: uuid.UUID) -> CertificationRequest:
    request = session.get(CertificationRequest, request_id)
    if request is None:
        raise NotFound("No such certification request")
    return request


def _decide(
    session: Session, *, actor: Account, request: CertificationRequest, status: str, note: str
) -> CertificationRequest:
    if not actor.is_admin:
        raise Forbidden("Only administrators decide certification requests")
    if request.status != "submitted":
        raise Conflict(f"This request was already {request.status}", code="already_decided")
    request.status = status
    request.note = validation.text(note, what="Note", max_len=2000, lines=True)
    request.reviewer_id = actor.id
    request.decided_at = utcnow()
    return request


def approve(
    session: Session,
    *,
    actor: Account,
    request: CertificationRequest,
    note: str = "",
    settings: Settings | None,
) -> CertificationRequest:
    """Certify the request's digest: it must be signed by a key that is not revoked."""
    product = request.product
    # The keys of the signatures relied on are share-locked, then the digest checked again:
    # a revocation committing meanwhile is waited for and seen, and one that comes later
    # waits for this approval and then ends it (publisher_keys.revoke_key).
    counting = signing.valid_signatures(session, product.repository, [request.digest])
    for key_id in sorted({sig.key_id for sig in counting.get(request.digest, [])}):
        lock_row(session, PublisherKey, key_id, mode="share", populate=False)
    if not signing.is_signed(session, product.repository, request.digest):
        raise Conflict(
            f"{request.digest[:19]}… of {product.repository} is not signed by a registered, "
            "unrevoked key of the publisher; it cannot be certified",
            code="unsigned",
        )
    session.execute(
        update(CertificationRequest)
        .where(
            CertificationRequest.product_id == product.id,
            CertificationRequest.status == "approved",
        )
        .values(status="superseded")
    )
    _decide(session, actor=actor, request=request, status="approved", note=note)
    request.certified_digest = request.digest
    catalog.set_badges(session, actor=actor, product=product, certified=True)
    session.execute(
        update(UnsignedPushFlag)
        .where(
            UnsignedPushFlag.product_id == product.id,
            UnsignedPushFlag.digest == request.digest,
            UnsignedPushFlag.resolved_at.is_(None),
        )
        .values(resolved_at=utcnow(), resolution="certified")
    )
    session.flush()
    _record(session, actor, request, "certification.approve")
    _notify(session, request, settings)
    return request


def reject(
    session: Session,
    *,
    actor: Account,
    request: CertificationRequest,
    note: str,
    settings: Settings | None,
) -> CertificationRequest:
    """Turn a request down; the note (required) tells the publisher why."""
    if not note.strip():
        raise ValidationFailed("Note: say why the request is rejected", code="note_required")
    _decide(session, actor=actor, request=request, status="rejected", note=note)
    session.flush()
    _record(session, actor, request, "certification.reject")
    _notify(session, request, settings)
    return request


def _notify(session: Session, request: CertificationRequest, settings: Settings | None) -> None:
    """The publisher is told by mail (given the store's settings, else not mailed)."""
    notices.certification_decided(
        session,
        settings,
        request_id=request.id,
        product=request.product,
        tag=request.tag,
        decision=request.status,
        note=request.note,
    )


def _record(session: Session, actor: Account, request: CertificationRequest, action: str) -> None:
    audit.record(
        session,
        action=action,
        actor=actor,
        target=request,
        org=request.product.organization_id,
        details={
            "product": request.product.repository,
            "tag": request.tag,
            "digest": request.digest,
            "note": request.note,
        },
    )


def end_unsigned(session: Session, *, org: Organization | uuid.UUID) -> list[Product]:
    """End the certifications of ``org`` whose certified digest no longer has a signature
    that counts (its key was revoked): the badge goes at once, as when an administrator
    removes it. Returns the products concerned, for :func:`record_ended` (the audit comes
    after every row this changes, see store.audit)."""
    org_id = org.id if isinstance(org, Organization) else org
    certified = session.scalars(
        select(Product)
        .where(Product.organization_id == org_id, Product.certified_at.is_not(None))
        .order_by(Product.id)
    )
    ended = []
    for product in certified:
        digest = signing.certified_digest(session, product)
        if digest is None or signing.is_signed(session, product.repository, digest):
            continue
        product.certified_at = None
        ended.append(product)
    session.flush()
    return ended


def record_ended(session: Session, products: list[Product], *, actor: Account, reason: str) -> None:
    """Audit the certifications :func:`end_unsigned` ended, with their cause."""
    for product in products:
        audit.record(
            session,
            action="product.badges",
            actor=actor,
            target=product,
            org=product.organization_id,
            details={
                "repository": product.repository,
                "official": None,
                "certified": False,
                "reason": reason,
            },
        )


def queue(session: Session, *, status: str | None = "submitted") -> list[CertificationRequest]:
    stmt = select(CertificationRequest).order_by(CertificationRequest.submitted_at.desc())
    if status:
        if status not in STATUSES:
            raise ValidationFailed(f"Status must be one of {', '.join(STATUSES)}")
        stmt = stmt.where(CertificationRequest.status == status)
    return list(session.scalars(stmt))


def requests_of(session: Session, product: Product) -> list[CertificationRequest]:
    return list(
        session.scalars(
            select(CertificationRequest)
            .where(CertificationRequest.product_id == product.id)
            .order_by(CertificationRequest.submitted_at.desc())
        )
    )


@dataclass(frozen=True)
class CheckItem:
    label: str
    ok: bool


def checklist(product: Product) -> list[CheckItem]:
    """How complete the listing is, for the reviewer (advice, not a gate)."""
    return [
        CheckItem("Published", product.status == "published"),
        CheckItem("Summary", bool(product.summary.strip())),
        CheckItem("Description", len(product.description_md.strip()) >= 100),
        CheckItem("Logo", bool(product.logo_url)),
        CheckItem("Documentation link", bool(product.docs_url)),
        CheckItem("Support link", bool(product.support_url)),
        CheckItem("License agreement (EULA) link", bool(product.eula_url)),
        CheckItem("Categories", bool(product.categories)),
        CheckItem("Platforms", bool(product.platforms)),
        CheckItem("At least one active tier", bool(product.active_tiers)),
        CheckItem("Verified publisher", product.organization.verified),
    ]
