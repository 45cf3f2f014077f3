"""refresh tokens bounded by their source: source credential, family, client, absolute cap

Every refresh token records what it was issued from (a password log-in, a personal access
token or a license), the family of tokens rotated from one log-in, the client that asked,
an absolute expiry no use extends, and when it was rotated. Refresh tokens issued before
this revision recorded none of that and may exceed their source: they are revoked.

Revision ID: 0101
Revises: 0400
Create Date: 2026-12-02 20:40:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0101"
down_revision: str | Sequence[str] | None = "0400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("source_token_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("source_license_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("family_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("client", sa.String(length=100), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("absolute_expires_at", store.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("rotated_at", store.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_access_tokens_source_token_id_access_tokens"),
            "access_tokens",
            ["source_token_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_access_tokens_source_license_id_licenses"),
            "licenses",
            ["source_license_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_access_tokens_family_id"), ["family_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_access_tokens_source_token_id"), ["source_token_id"], unique=False
        )
    tokens = sa.table(
        "access_tokens",
        sa.column("kind", sa.String()),
        sa.column("revoked_at", store.db.UTCDateTime(timezone=True)),
    )
    op.execute(
        tokens.update()
        .where(tokens.c.kind == "refresh", tokens.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


def downgrade() -> None:
    with op.batch_alter_table("access_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_tokens_source_token_id"))
        batch_op.drop_index(batch_op.f("ix_access_tokens_family_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_access_tokens_source_license_id_licenses"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_access_tokens_source_token_id_access_tokens"), type_="foreignkey"
        )
        batch_op.drop_column("rotated_at")
        batch_op.drop_column("absolute_expires_at")
        batch_op.drop_column("client")
        batch_op.drop_column("family_id")
        batch_op.drop_column("source_license_id")
        batch_op.drop_column("source_token_id")
        batch_op.drop_column("source_kind")
