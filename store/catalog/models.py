"""Products, their tiers and the categories they are listed under."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.accounts.models import Organization
from store.catalog.periods import BillingKind, BillingKindType
from store.db import Base, StringList, new_id, utcnow

product_categories = Table(
    "product_categories",
    Base.metadata,
    Column("product_id", ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "category_slug",
        ForeignKey("categories.slug", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class Category(Base):
    __tablename__ = "categories"

    slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("organization_id", "slug"),
        Index("ix_products_status_kind", "status", "kind"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))  # image | plugin
    slug: Mapped[str] = mapped_column(String(128))
    # "<org-slug>/<slug>": the registry repository the product is delivered from.
    repository: Mapped[str] = mapped_column(String(255), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(300), default="")
    description_md: Mapped[str] = mapped_column(Text, default="")
    logo_url: Mapped[str] = mapped_column(String(500), default="")
    platforms: Mapped[list[str]] = mapped_column(StringList, default=list)
    docs_url: Mapped[str] = mapped_column(String(500), default="")
    support_url: Mapped[str] = mapped_column(String(500), default="")
    eula_url: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft|published|suspended
    status_reason: Mapped[str] = mapped_column(Text, default="")
    official: Mapped[bool] = mapped_column(Boolean, default=False)
    certified_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(default=None)

    organization: Mapped[Organization] = relationship(lazy="joined")
    categories: Mapped[list[Category]] = relationship(
        secondary=product_categories, order_by="Category.name"
    )
    tiers: Mapped[list[Tier]] = relationship(
        back_populates="product", order_by="Tier.sort_order", cascade="all, delete-orphan"
    )

    @property
    def certified(self) -> bool:
        return self.certified_at is not None

    @property
    def active_tiers(self) -> list[Tier]:
        return [t for t in self.tiers if t.active]

    @property
    def is_public(self) -> bool:
        """Anyone, anonymous included, may pull: every active tier is free and public."""
        tiers = self.active_tiers
        return bool(tiers) and all(t.is_free and t.public for t in tiers)

    @property
    def is_sold(self) -> bool:
        """One of its active tiers at least is paid: its tiers, never a repository's public
        mark, decide who pulls its images (store.registry.grants)."""
        return any(not t.is_free for t in self.active_tiers)


class Tier(Base):
    __tablename__ = "tiers"
    __table_args__ = (UniqueConstraint("product_id", "slug"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    billing: Mapped[BillingKind] = mapped_column(BillingKindType())
    amount_minor: Mapped[int] = mapped_column(Integer, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    trial_days: Mapped[int] = mapped_column(Integer, default=0)
    seats: Mapped[int | None] = mapped_column(Integer, default=None)  # None = unlimited
    features: Mapped[list[str]] = mapped_column(StringList, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # A free tier marked public lets anyone pull anonymously.
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    # The payment gateway's price for the current amount; a new one is made when it changes.
    gateway_price_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    product: Mapped[Product] = relationship(back_populates="tiers")

    @property
    def is_free(self) -> bool:
        return self.billing == BillingKind.FREE

    @property
    def recurring(self) -> bool:
        return BillingKind(self.billing).recurring
