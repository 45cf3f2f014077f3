"""API shapes for entitlements and access decisions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ORM(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class EntitlementProduct(ORM):
    id: uuid.UUID
    repository: str
    title: str
    kind: str


class EntitlementTier(ORM):
    slug: str
    name: str
    billing: str


class EntitlementOut(ORM):
    id: uuid.UUID
    holder: str = Field(description="'user:<username>' or 'org:<slug>'")
    product: EntitlementProduct
    tier: EntitlementTier
    source: str
    status: str = Field(description="Stored status: active, suspended, revoked or expired")
    effective_status: str = Field(description="Status now: active, grace, pending, expired, ...")
    starts_at: datetime
    ends_at: datetime | None
    grace_until: datetime | None
    seats: int | None
    features: list[str]
    reason: str
    revoked_at: datetime | None
    created_at: datetime


class GrantIn(BaseModel):
    repository: str = Field(max_length=255, examples=["acme/redis-ha"])
    tier: str = Field(max_length=64, examples=["pro"])
    username: str | None = Field(default=None, max_length=64)
    organization: str | None = Field(default=None, max_length=64)
    ends_at: datetime | None = None
    reason: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _one_holder(self) -> GrantIn:
        if (self.username is None) == (self.organization is None):
            raise ValueError("give exactly one of username or organization")
        if self.ends_at is not None and self.ends_at.tzinfo is None:
            raise ValueError("ends_at needs a time zone, e.g. 2027-01-01T00:00:00Z")
        return self


class RevokeIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class AccessOut(BaseModel):
    repository: str
    allowed: bool
    reason: str = Field(
        description="entitled, public, publisher, no_license, expired, revoked, "
        "suspended or product_suspended"
    )
    message: str
    product_url: str = Field(description="Where to get access")
    entitlement_id: uuid.UUID | None = None


class LicenseOut(BaseModel):
    id: uuid.UUID = Field(description="License id; also the registry username")
    entitlement_id: uuid.UUID
    kid: str = Field(description="The key that signed it (see /.well-known/jwks.json)")
    token: str = Field(description="The signed license (compact JWS, EdDSA)")
    issued_at: datetime
    not_before: datetime
    expires_at: datetime | None = Field(description="None: perpetual")
    grace_until: datetime | None
    revoked_at: datetime | None
    filename: str = Field(description="Suggested name of the .lic file")
    claims: dict[str, Any] = Field(description="The signed payload, decoded")


class LicenseKeyOut(BaseModel):
    kid: str
    alg: str
    public_pem: str
    created_at: datetime
    activated_at: datetime | None
    signing: bool = Field(description="Whether this key signs new licenses now")


class RevocationListOut(BaseModel):
    iss: str
    iat: int = Field(description="Issued at (Unix seconds)")
    next_update: int = Field(description="A fresh list is available by then (Unix seconds)")
    revoked: list[str] = Field(description="Revoked license ids")
    jws: str = Field(description="The same list, signed (typ store-revocations+jws)")
