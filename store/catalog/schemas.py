"""API shapes for products, tiers and categories."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from store.catalog.markdown import render
from store.catalog.periods import BillingKind


class ORM(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CategoryOut(ORM):
    slug: str
    name: str


class CategoryCount(BaseModel):
    slug: str
    name: str
    count: int


class TierIn(BaseModel):
    slug: str = Field(max_length=64, examples=["pro"])
    name: str | None = Field(default=None, max_length=120)
    description: str = Field(default="", max_length=2000)
    billing: BillingKind = BillingKind.FREE
    amount_minor: int = Field(default=0, ge=0, description="Price in minor units (cents)")
    currency: str = Field(default="usd", min_length=3, max_length=3)
    trial_days: int = Field(default=0, ge=0, le=365)
    seats: int | None = Field(default=None, ge=1, description="Seat/node limit; null = unlimited")
    features: list[str] = Field(default_factory=list, max_length=30)
    public: bool = Field(default=False, description="Free tiers only: anyone may pull anonymously")
    active: bool = True


class TierUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    billing: BillingKind | None = None
    amount_minor: int | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    trial_days: int | None = Field(default=None, ge=0, le=365)
    seats: int | None = Field(default=None, ge=1)
    features: list[str] | None = Field(default=None, max_length=30)
    public: bool | None = None
    active: bool | None = None
    sort_order: int | None = None


class TierOut(ORM):
    id: uuid.UUID
    slug: str
    name: str
    description: str
    billing: str
    amount_minor: int
    currency: str
    trial_days: int
    seats: int | None
    features: list[str]
    public: bool
    active: bool


class PublisherOut(ORM):
    slug: str
    name: str
    verified: bool


class ProductIn(BaseModel):
    kind: Literal["image", "plugin"] = "image"
    slug: str = Field(max_length=128, description="Repository name inside the organization")
    title: str = Field(max_length=200)
    summary: str = Field(default="", max_length=300)
    description_md: str = Field(default="", max_length=100_000, description="Markdown")
    logo_url: str = Field(default="", max_length=500)
    docs_url: str = Field(default="", max_length=500)
    support_url: str = Field(default="", max_length=500)
    eula_url: str = Field(default="", max_length=500)
    platforms: list[str] = Field(default_factory=list, max_length=20, examples=[["linux/amd64"]])
    categories: list[str] = Field(default_factory=list, max_length=10)


class ProductUpdate(BaseModel):
    title: str | None = Field(default=None, max_length=200)
    summary: str | None = Field(default=None, max_length=300)
    description_md: str | None = Field(default=None, max_length=100_000)
    logo_url: str | None = Field(default=None, max_length=500)
    docs_url: str | None = Field(default=None, max_length=500)
    support_url: str | None = Field(default=None, max_length=500)
    eula_url: str | None = Field(default=None, max_length=500)
    platforms: list[str] | None = Field(default=None, max_length=20)
    categories: list[str] | None = Field(default=None, max_length=10)


class StatusIn(BaseModel):
    status: Literal["draft", "published", "suspended"]
    reason: str = Field(default="", max_length=2000)


class BadgesIn(BaseModel):
    official: bool | None = None
    certified: bool | None = None


class ProductSummary(ORM):
    id: uuid.UUID
    kind: str
    repository: str
    title: str
    summary: str
    logo_url: str
    status: str
    official: bool
    certified: bool
    publisher: PublisherOut = Field(validation_alias="organization")
    categories: list[CategoryOut]
    platforms: list[str]
    tiers: list[TierOut] = Field(validation_alias="active_tiers")


class ProductOut(ProductSummary):
    description_md: str
    docs_url: str
    support_url: str
    eula_url: str
    status_reason: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    all_tiers: list[TierOut] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def description_html(self) -> str:
        """The description rendered to sanitised HTML."""
        return render(self.description_md)


class ProductPage(BaseModel):
    items: list[ProductSummary]
    page: int
    per_page: int
    total: int
    pages: int
