"""builds: a repository's Git source and build rules, the builds and their logs

Revision ID: 0620
Revises: 0600
Create Date: 2026-12-03 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0620"
down_revision: str | Sequence[str] | None = "0600"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = store.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "build_sources",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("repository_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=1000), nullable=False),
        sa.Column("deploy_key_sealed", sa.Text(), nullable=True),
        sa.Column("webhook_secret_sealed", sa.Text(), nullable=False),
        sa.Column("schedule_minutes", sa.Integer(), nullable=True),
        sa.Column("next_scheduled_at", TIME, nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("configured_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["configured_by_id"],
            ["accounts.id"],
            name=op.f("fk_build_sources_configured_by_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["hub_repositories.id"],
            name=op.f("fk_build_sources_repository_id_hub_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_sources")),
        sa.UniqueConstraint("repository_id", name=op.f("uq_build_sources_repository_id")),
    )
    with op.batch_alter_table("build_sources", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_build_sources_next_scheduled_at"), ["next_scheduled_at"], unique=False
        )
    op.create_table(
        "build_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("ref_kind", sa.String(length=8), nullable=False),
        sa.Column("pattern", sa.String(length=255), nullable=False),
        sa.Column("docker_tag", sa.String(length=128), nullable=False),
        sa.Column("dockerfile", sa.String(length=500), nullable=False),
        sa.Column("context", sa.String(length=500), nullable=False),
        sa.Column("build_args", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["build_sources.id"],
            name=op.f("fk_build_rules_source_id_build_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_rules")),
        sa.UniqueConstraint("source_id", "position", name=op.f("uq_build_rules_source_id")),
    )
    op.create_table(
        "builds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("repository_id", sa.Uuid(), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("source_url", sa.String(length=1000), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=True),
        sa.Column("docker_tag", sa.String(length=128), nullable=False),
        sa.Column("dockerfile", sa.String(length=500), nullable=False),
        sa.Column("context", sa.String(length=500), nullable=False),
        sa.Column("build_args", sa.JSON(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("triggered_by", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("queued_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("heartbeat_at", TIME, nullable=True),
        sa.Column("digest", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("log_size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["hub_repositories.id"],
            name=op.f("fk_builds_repository_id_hub_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builds")),
    )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.create_index("ix_builds_status_queued_at", ["status", "queued_at"], unique=False)
        batch_op.create_index(
            "ix_builds_repository_id_queued_at", ["repository_id", "queued_at"], unique=False
        )
        batch_op.create_index("ix_builds_namespace_status", ["namespace", "status"], unique=False)
    op.create_table(
        "build_log_chunks",
        sa.Column("build_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["builds.id"],
            name=op.f("fk_build_log_chunks_build_id_builds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("build_id", "seq", name=op.f("pk_build_log_chunks")),
    )


def downgrade() -> None:
    op.drop_table("build_log_chunks")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index("ix_builds_namespace_status")
        batch_op.drop_index("ix_builds_repository_id_queued_at")
        batch_op.drop_index("ix_builds_status_queued_at")
    op.drop_table("builds")
    op.drop_table("build_rules")
    with op.batch_alter_table("build_sources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_build_sources_next_scheduled_at"))
    op.drop_table("build_sources")
