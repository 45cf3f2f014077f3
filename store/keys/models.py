"""The store's own signing keys: registry tokens (ES256) and licenses (Ed25519)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base, utcnow


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(128), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), index=True)  # registry | license
    alg: Mapped[str] = mapped_column(String(16))  # ES256 | EdDSA
    public_pem: Mapped[str] = mapped_column(Text)
    # The private key, encrypted with a key derived from the store's secret.
    private_pem_encrypted: Mapped[str] = mapped_column(Text)
    # Self-signed certificate the registry trusts (registry keys only).
    certificate_pem: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(default=None)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
