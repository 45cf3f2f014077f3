"""Publisher signing keys, signatures over image digests, certification and push flags."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.accounts.models import Account, Organization
from store.catalog.models import Product
from store.db import Base, new_id, utcnow


class PublisherKey(Base):
    """The public half of a publisher's signing key (the private half never reaches us)."""

    __tablename__ = "publisher_keys"
    __table_args__ = (UniqueConstraint("organization_id", "fingerprint"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    alg: Mapped[str] = mapped_column(String(16))  # ecdsa-p256 | ed25519
    public_pem: Mapped[str] = mapped_column(Text)
    # SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex.
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )

    organization: Mapped[Organization] = relationship()

    def is_valid_at(self, moment: datetime) -> bool:
        return self.revoked_at is None or self.revoked_at > moment


class ContentSignature(Base):
    """A verified signature by a publisher key over one digest of one repository."""

    __tablename__ = "content_signatures"
    __table_args__ = (
        UniqueConstraint("key_id", "repository", "digest"),
        Index("ix_content_signatures_repository_digest", "repository", "digest"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("publisher_keys.id", ondelete="CASCADE"))
    repository: Mapped[str] = mapped_column(String(255))
    product_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("products.id", ondelete="SET NULL"), index=True
    )
    digest: Mapped[str] = mapped_column(String(100))
    tag: Mapped[str | None] = mapped_column(String(128), default=None)
    # Exactly what was uploaded, base64: the simple-signing JSON and the signature over it.
    payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    uploaded_by: Mapped[str] = mapped_column(String(128), default="")

    key: Mapped[PublisherKey] = relationship(lazy="joined")


class CertificationRequest(Base):
    """A publisher's request to certify one version (tag and digest) of a product.

    ``approved`` is the product's current certification; an older approval becomes
    ``superseded`` when a newer one is approved.
    """

    __tablename__ = "certification_requests"
    __table_args__ = (Index("ix_certification_requests_status", "status", "submitted_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    product_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    tag: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="submitted")
    note: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    reviewer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    # The digest the certified badge is tied to (set on approval, kept when superseded).
    certified_digest: Mapped[str | None] = mapped_column(String(100), default=None)

    product: Mapped[Product] = relationship()
    submitted_by: Mapped[Account | None] = relationship(foreign_keys=[submitted_by_id])
    reviewer: Mapped[Account | None] = relationship(foreign_keys=[reviewer_id])


class UnsignedPushFlag(Base):
    """A push of an unsigned digest to a certified product, for the publisher and admins.

    Resolved by itself when a valid signature for the digest arrives, or dismissed.
    """

    __tablename__ = "unsigned_push_flags"
    __table_args__ = (UniqueConstraint("product_id", "tag", "digest"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    repository: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(100))
    pushed_at: Mapped[datetime] = mapped_column(default=utcnow)
    pushed_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    resolution: Mapped[str] = mapped_column(String(16), default="")  # signed | dismissed

    product: Mapped[Product] = relationship()

    @property
    def open(self) -> bool:
        return self.resolved_at is None
