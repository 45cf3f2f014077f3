"""API shapes for signing keys, signatures, tag status and certification."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ORM(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class KeyIn(BaseModel):
    public_pem: str = Field(
        max_length=8192, description="ECDSA P-256 or Ed25519 public key, PEM (SubjectPublicKeyInfo)"
    )
    label: str = Field(default="", max_length=100, examples=["ci-2026"])


class KeyOut(ORM):
    id: uuid.UUID
    alg: str
    fingerprint: str = Field(description="SHA-256 of the DER SubjectPublicKeyInfo, hex")
    label: str
    public_pem: str
    created_at: datetime
    revoked_at: datetime | None


class SignatureIn(BaseModel):
    repository: str = Field(max_length=255, examples=["acme/app"])
    digest: str = Field(max_length=100, examples=["sha256:" + "0" * 64])
    tag: str | None = Field(default=None, max_length=128)
    payload: str = Field(
        max_length=100_000, description="The simple-signing JSON that was signed, base64"
    )
    signature: str = Field(max_length=4096, description="The signature over payload, base64")
    key_fingerprint: str | None = Field(
        default=None, max_length=64, description="Which registered key signed (optional)"
    )


class SignatureOut(ORM):
    id: uuid.UUID
    repository: str
    digest: str
    tag: str | None
    key_fingerprint: str
    key_label: str
    key_revoked_at: datetime | None
    created_at: datetime
    uploaded_by: str


class TagStatusOut(BaseModel):
    tag: str
    digest: str
    pushed_at: datetime
    signed: bool
    certified: bool
    status: str = Field(description="certified | signed | unsigned")
    signers: list[str]
    flagged: bool = Field(description="an unsigned push to a certified product, not resolved")


class CertificationIn(BaseModel):
    tag: str = Field(max_length=128)
    digest: str | None = Field(
        default=None, max_length=100, description="Default: the tag's current digest"
    )


class DecisionIn(BaseModel):
    note: str = Field(default="", max_length=2000)


class CertificationOut(ORM):
    id: uuid.UUID
    product: str
    tag: str
    digest: str
    status: str
    note: str
    submitted_at: datetime
    decided_at: datetime | None
    certified_digest: str | None


class FlagOut(ORM):
    id: uuid.UUID
    repository: str
    tag: str
    digest: str
    pushed_at: datetime
    pushed_by: str
    created_at: datetime
    resolved_at: datetime | None
    resolution: str
