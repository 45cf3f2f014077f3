"""JSON shapes of the registry API."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class Refusal(BaseModel):
    repository: str
    actions: list[str]
    reason: str = Field(
        description="no_license, expired, revoked, suspended, product_suspended, "
        "login_required, push_denied, catalog_denied, token_scope or no_access"
    )
    message: str
    product_url: str | None = Field(default=None, description="Where to get access")


class ScopeGrant(BaseModel):
    type: str
    name: str
    actions: list[str]


class AccessCheckOut(BaseModel):
    """What a `docker pull`/`push` by the caller would be granted, and why not the rest."""

    subject: str = Field(description="Who is asking (empty for anonymous)")
    granted: list[ScopeGrant]
    refused: list[Refusal]
    invalid: list[str] = Field(default_factory=list, description="Scopes that could not be parsed")


class PullDay(BaseModel):
    day: date
    count: int


class PullHistoryOut(BaseModel):
    repository: str
    total: int = Field(description="Manifest downloads since the repository was first seen")
    days: list[PullDay]


class VisibilityIn(BaseModel):
    visibility: str = Field(description="private (default) or public: anyone may pull")


class VisibilityOut(BaseModel):
    repository: str
    visibility: str = Field(description="The namespace owner's setting: private or public")
    public: bool = Field(
        description="Anyone may pull it: marked public, or it belongs to a published product "
        "whose tiers are all free and public"
    )
    product: str | None = Field(default=None, description="The product it belongs to")
