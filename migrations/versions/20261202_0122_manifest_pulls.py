"""registry: recent manifest downloads, so that a multi-arch pull counts once

A multi-arch pull downloads the image index and then the platform's manifest; both are
manifest GETs. ``manifest_pulls`` keeps the recent ones per repository and client, and an
index and a platform manifest fetched by the same client within a minute of each other
pair up and count as one pull (Docker Hub's rule).

Revision ID: 0122
Revises: 0222
Create Date: 2026-12-02 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0122"
down_revision: str | Sequence[str] | None = "0222"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "manifest_pulls",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("repository_id", sa.Uuid(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("is_index", sa.Boolean(), nullable=False),
        sa.Column("paired", sa.Boolean(), nullable=False),
        sa.Column("at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["hub_repositories.id"],
            name=op.f("fk_manifest_pulls_repository_id_hub_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifest_pulls")),
    )
    with op.batch_alter_table("manifest_pulls", schema=None) as batch_op:
        batch_op.create_index(
            "ix_manifest_pulls_repository_client", ["repository_id", "client", "at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("manifest_pulls", schema=None) as batch_op:
        batch_op.drop_index("ix_manifest_pulls_repository_client")
    op.drop_table("manifest_pulls")
