"""web sessions kept on the server

A browser's log-in becomes a row: the signed cookie carries a random id whose SHA-256 is
kept here with the account, user agent, address, creation, last request and end. Sessions
made before this revision lived in the cookie alone; they no longer log anyone in (their
browsers are asked to log in again).

Revision ID: 0140
Revises: 0221
Create Date: 2026-12-02 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0140"
down_revision: str | Sequence[str] | None = "0221"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_web_sessions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_web_sessions_secret_hash")),
    )
    op.create_index(
        "ix_web_sessions_account", "web_sessions", ["account_id", "ended_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_web_sessions_account", table_name="web_sessions")
    op.drop_table("web_sessions")
