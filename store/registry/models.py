"""The hub: every repository the registry holds, its tags and pull counts."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql import ColumnElement

from store.db import Base, new_id, utcnow


class HubRepository(Base):
    __tablename__ = "hub_repositories"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)  # "<namespace>/<repo>"
    namespace: Mapped[str] = mapped_column(String(64), index=True)
    description: Mapped[str] = mapped_column(Text, default="")  # one-line summary
    readme_md: Mapped[str] = mapped_column(Text, default="", server_default="")  # Markdown
    # Not pullable by anyone (store.registry.grants): derived, kept in step by the hub.
    # Search shows a private repository only to those who may pull it.
    private: Mapped[bool] = mapped_column(Boolean, default=True)
    # The namespace owner's setting: "private" (default) or "public" (anyone may pull).
    visibility: Mapped[str] = mapped_column(String(16), default="private", server_default="private")
    pull_count: Mapped[int] = mapped_column(BigInteger, default=0)
    star_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_pushed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_pulled_at: Mapped[datetime | None] = mapped_column(default=None)

    tags: Mapped[list[HubTag]] = relationship(
        back_populates="repository", cascade="all, delete-orphan", order_by="HubTag.name"
    )


def names_under(name: str, dialect: str) -> ColumnElement[bool]:
    """Repositories named ``<name>/...`` (a product's sub-repositories), as a range of
    names in byte order that an index serves on both databases: on SQLite the unique
    index of ``name`` (binary collation), on PostgreSQL ``ix_hub_repositories_name_pattern``
    (``text_pattern_ops``, migration 0790; under the database's collation the unique index
    serves neither ``LIKE 'acme/app/%'`` nor a plain range, and a listing edit scanned the
    table: 146 ms at 1,000,000 repositories). ``0`` follows ``/`` in byte order."""
    low, high = name + "/", name + "0"
    column = HubRepository.__table__.c.name
    if dialect == "postgresql":
        return column.op("~>=~", is_comparison=True)(low) & column.op("~<~", is_comparison=True)(
            high
        )
    return (column >= low) & (column < high)


COLLABORATOR_PERMISSIONS = ("read", "write", "admin")


class RepositoryCollaborator(Base):
    """An account given access to one repository of a personal namespace: ``read`` (pull),
    ``write`` (pull, push) or ``admin`` (also delete tags and manage the repository's
    settings). The may-pull rule (store.registry.grants) reads these rows."""

    __tablename__ = "repository_collaborators"
    __table_args__ = (
        UniqueConstraint("repository_id", "account_id"),
        CheckConstraint("permission IN ('read', 'write', 'admin')", name="permission"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    repository_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hub_repositories.id", ondelete="CASCADE")
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    permission: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HubTag(Base):
    __tablename__ = "hub_tags"
    __table_args__ = (UniqueConstraint("repository_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    repository_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hub_repositories.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(100))
    media_type: Mapped[str] = mapped_column(String(200), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    pushed_at: Mapped[datetime] = mapped_column(default=utcnow)
    pushed_by: Mapped[str] = mapped_column(String(128), default="")
    # Each platform of the manifest or image index ({os, architecture, variant, digest,
    # size}), read from the registry (store.registry.details); None until read.
    platforms: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)

    repository: Mapped[HubRepository] = relationship(back_populates="tags")


class HubStar(Base):
    """An account's star on a repository (once each); ``star_count`` follows these rows."""

    __tablename__ = "hub_stars"

    repository_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hub_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PullCounter(Base):
    """Manifest pulls of one repository on one day (UTC)."""

    __tablename__ = "pull_counters"

    repository_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hub_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ManifestPull(Base):
    """A recent manifest download, kept a while so that the image index and the platform
    manifest of one multi-arch pull pair up and count once (store.registry.hub)."""

    __tablename__ = "manifest_pulls"
    __table_args__ = (
        Index("ix_manifest_pulls_repository_client", "repository_id", "client", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    repository_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hub_repositories.id", ondelete="CASCADE")
    )
    client: Mapped[str] = mapped_column(String(64))  # SHA-256 of address and user agent
    is_index: Mapped[bool] = mapped_column(Boolean)
    paired: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column()


class DecisionGeneration(Base):
    """One row (``id`` 1): a counter bumped by triggers (migration 0750) on every change
    that can alter a /token decision; the token endpoint keeps credential rows in memory
    while it stays the same (store.registry.lookup.CredentialCache). Never written by the
    application."""

    __tablename__ = "registry_decision_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)
