"""Entitlements (who may use what, until when) and the license documents issued for them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.accounts.models import Account, Organization
from store.catalog.models import Product, Tier
from store.db import Base, StringList, new_id, utcnow
from store.licensing import usable


class Entitlement(Base):
    __tablename__ = "entitlements"
    __table_args__ = (
        Index("ix_entitlements_account_product", "account_id", "product_id"),
        Index("ix_entitlements_org_product", "organization_id", "product_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # Exactly one of account and organization holds the entitlement.
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    product_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    source: Mapped[str] = mapped_column(String(16))  # free | grant | order | subscription | trial
    source_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    status: Mapped[str] = mapped_column(String(16), default="active")
    starts_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime | None] = mapped_column(default=None)  # None = perpetual
    grace_until: Mapped[datetime | None] = mapped_column(default=None)
    # What was bought, copied from the tier so later tier edits never change it.
    seats: Mapped[int | None] = mapped_column(Integer, default=None)
    features: Mapped[list[str]] = mapped_column(StringList, default=list)
    reason: Mapped[str] = mapped_column(Text, default="")
    granted_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    account: Mapped[Account | None] = relationship(foreign_keys=[account_id])
    organization: Mapped[Organization | None] = relationship()
    product: Mapped[Product] = relationship(lazy="joined")
    tier: Mapped[Tier] = relationship(lazy="joined")

    def effective_status(self, now: datetime) -> str:
        """The status as of now (:func:`store.licensing.usable.effective_status`)."""
        return usable.effective_status(
            self.status, self.starts_at, self.ends_at, self.grace_until, now
        )

    def is_usable(self, now: datetime) -> bool:
        return usable.is_usable(self.status, self.starts_at, self.ends_at, self.grace_until, now)


class License(Base):
    """A signed license document issued for an entitlement."""

    __tablename__ = "licenses"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    entitlement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("entitlements.id", ondelete="CASCADE"), index=True
    )
    kid: Mapped[str] = mapped_column(String(128))
    token: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    revocation_reason: Mapped[str] = mapped_column(Text, default="")

    entitlement: Mapped[Entitlement] = relationship()
