"""Accounts, organizations (publishers), memberships, invitations and access tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.db import Base, StringList, new_id, utcnow


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Bumped on password change: sessions and cached credential checks made before are void.
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Two-factor sign-in (TOTP, store/accounts/two_factor.py): the shared secret, encrypted
    # under the store secret; set at enrolment, in force from totp_enabled_at. The last
    # time step used: a code is accepted once.
    totp_secret: Mapped[str | None] = mapped_column(String(200), default=None)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(default=None)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # When the address was confirmed by a link sent to it (None: not yet).
    email_verified_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the owner accepted the terms of service and privacy policy at sign-up.
    terms_accepted_at: Mapped[datetime | None] = mapped_column(default=None)
    # When its owner deleted the account (store.accounts.lifecycle): personal data erased,
    # the row kept so orders keep their (anonymised) buyer.
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )


class AccountToken(Base):
    """A single-use link sent by e-mail: verify the address, reset the password, confirm a
    new address. Only a SHA-256 of the secret is stored."""

    __tablename__ = "account_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(16))  # verify | reset | email
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The address being verified (verify, email): a later change of address voids the link.
    email: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class RecoveryCode(Base):
    """A single-use two-factor recovery code (SHA-256 of the code; ten per enrolment)."""

    __tablename__ = "recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The registry namespace: every repository of the organization is "<slug>/<name>".
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    website: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    verification_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    verification_note: Mapped[str] = mapped_column(Text, default="")

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="organization", cascade="all, delete-orphan"
    )

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


class Namespace(Base):
    """One namespace for usernames and organization slugs: a name taken by either is taken
    for both. The row says who owns the name: an account (a user) or an organization.
    Reserved names (store.validation.RESERVED_NAMES) are refused before they get here."""

    __tablename__ = "namespaces"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'user' AND account_id IS NOT NULL AND organization_id IS NULL)"
            " OR (kind = 'organization' AND organization_id IS NOT NULL AND account_id IS NULL)",
            name="one_owner",
        ),
    )

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # user | organization
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), unique=True
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The visibility a repository gets when it is created in this namespace.
    default_visibility: Mapped[str] = mapped_column(
        String(16), default="private", server_default="private"
    )

    account: Mapped[Account | None] = relationship()
    organization: Mapped[Organization | None] = relationship()


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("organization_id", "account_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))  # owner | editor | viewer
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    organization: Mapped[Organization] = relationship(back_populates="memberships")
    account: Mapped[Account] = relationship(back_populates="memberships")


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    invited_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(default=None)
    declined_at: Mapped[datetime | None] = mapped_column(default=None)

    organization: Mapped[Organization] = relationship()
    account: Mapped[Account] = relationship(foreign_keys=[account_id])

    @property
    def pending(self) -> bool:
        return self.accepted_at is None and self.declined_at is None


class AccessToken(Base):
    """A personal access token, an organization robot token or a registry refresh token.

    Only a SHA-256 of the secret is stored; the secret is shown once at creation.
    """

    __tablename__ = "access_tokens"
    __table_args__ = (Index("ix_access_tokens_owner", "account_id", "organization_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # personal | robot | refresh
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(100))
    # The first characters of the secret, shown in listings so a leaked token can be traced.
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(StringList)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Refresh tokens only (store.accounts.refresh): the credential the log-in used
    # (password | personal | license) and that credential's row, the family of tokens
    # rotated from one log-in, the client that asked, an expiry no use extends, and when
    # the token was replaced by the next of its family (presenting it again is a reuse).
    source_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    source_token_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("access_tokens.id", ondelete="CASCADE"), default=None, index=True
    )
    source_license_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("licenses.id", ondelete="CASCADE"), default=None
    )
    family_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)
    client: Mapped[str] = mapped_column(String(100), default="", server_default="")
    absolute_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    rotated_at: Mapped[datetime | None] = mapped_column(default=None)

    account: Mapped[Account | None] = relationship(foreign_keys=[account_id])
    organization: Mapped[Organization | None] = relationship()
    source_token: Mapped[AccessToken | None] = relationship(
        remote_side=[id], foreign_keys=[source_token_id]
    )

    def is_usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class WebSession(Base):
    """A browser's log-in (store.accounts.sessions): the signed cookie holds the secret,
    this row a SHA-256 of it."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_account", "account_id", "ended_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str] = mapped_column(String(32), default="")

    account: Mapped[Account] = relationship()
