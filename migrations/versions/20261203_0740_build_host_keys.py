"""build sources: the deploy key's public half and the ssh host keys builds trust

Revision ID: 0740
Revises: 0601
Create Date: 2026-12-03 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0740"
down_revision: str | Sequence[str] | None = "0601"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("build_sources") as batch:
        batch.add_column(sa.Column("deploy_public_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("known_hosts", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("known_hosts_pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("build_sources") as batch:
        batch.drop_column("known_hosts_pinned")
        batch.drop_column("known_hosts")
        batch.drop_column("deploy_public_key")
