"""Automated builds: a repository's Git source and build rules, and the builds they make."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.db import Base, new_id, utcnow

# queued: waiting for a worker; running: claimed by one; the rest are final.
STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
FINAL_STATUSES = ("succeeded", "failed", "canceled")
TRIGGERS = ("webhook", "manual", "schedule")
REF_KINDS = ("branch", "tag")


class BuildSource(Base):
    """Where a repository's images are built from: one Git source per hub repository."""

    __tablename__ = "build_sources"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    repository_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hub_repositories.id", ondelete="CASCADE"), unique=True
    )
    url: Mapped[str] = mapped_column(String(1000))
    # An SSH private key (OpenSSH PEM) for ssh:// sources, sealed under the store secret.
    deploy_key_sealed: Mapped[str | None] = mapped_column(Text, default=None)
    # Its public half (``ssh-ed25519 AAAA… comment``): what the Git server must accept.
    deploy_public_key: Mapped[str | None] = mapped_column(Text, default=None)
    # The ssh host keys builds accept (known_hosts lines): pinned by the owner, or recorded
    # from the server on the first ssh fetch (trust on first use); later fetches require them.
    known_hosts: Mapped[str | None] = mapped_column(Text, default=None)
    known_hosts_pinned: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false()
    )
    # The shared secret of push webhooks (HMAC key, or the GitLab token), sealed likewise.
    webhook_secret_sealed: Mapped[str] = mapped_column(Text)
    # Build every rule's branch this often (minutes); None: no schedule.
    schedule_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    next_scheduled_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=1800)
    configured_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    rules: Mapped[list[BuildRule]] = relationship(
        back_populates="source", cascade="all, delete-orphan", order_by="BuildRule.position"
    )


class BuildRule(Base):
    """A branch or tag pattern and what to build when it moves."""

    __tablename__ = "build_rules"
    __table_args__ = (UniqueConstraint("source_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("build_sources.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    ref_kind: Mapped[str] = mapped_column(String(8))  # branch | tag
    pattern: Mapped[str] = mapped_column(String(255))  # glob: main, release/*, v*
    docker_tag: Mapped[str] = mapped_column(String(128))  # may use {ref} and {sha}
    dockerfile: Mapped[str] = mapped_column(String(500), default="Dockerfile")
    context: Mapped[str] = mapped_column(String(500), default=".")
    build_args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    source: Mapped[BuildSource] = relationship(back_populates="rules")


class Build(Base):
    """One build of one commit into one tag. What it builds is copied from its rule when it
    is queued, so editing the rules never changes a queued build."""

    __tablename__ = "builds"
    __table_args__ = (
        Index("ix_builds_status_queued_at", "status", "queued_at"),
        Index("ix_builds_repository_id_queued_at", "repository_id", "queued_at"),
        Index("ix_builds_namespace_status", "namespace", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    repository_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hub_repositories.id", ondelete="CASCADE")
    )
    repository: Mapped[str] = mapped_column(String(255))  # "<namespace>/<repo>"
    namespace: Mapped[str] = mapped_column(String(64))
    source_url: Mapped[str] = mapped_column(String(1000))
    ref: Mapped[str] = mapped_column(String(255))  # refs/heads/main, refs/tags/v1
    commit_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    docker_tag: Mapped[str] = mapped_column(String(128))
    dockerfile: Mapped[str] = mapped_column(String(500))
    context: Mapped[str] = mapped_column(String(500))
    build_args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trigger: Mapped[str] = mapped_column(String(16))  # webhook | manual | schedule
    triggered_by: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=1800)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # The worker running it, its claim, and the last sign of life (a claim lapses after).
    worker: Mapped[str] = mapped_column(String(128), default="")
    claim_token: Mapped[str | None] = mapped_column(String(64), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    digest: Mapped[str | None] = mapped_column(String(100), default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    log_size: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class BuildLogChunk(Base):
    """The build log, in the order it was written (read from a sequence number on)."""

    __tablename__ = "build_log_chunks"

    build_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)
