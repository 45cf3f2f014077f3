"""hub: a repository's Markdown README, and stars

* ``hub_repositories.readme_md``: the README shown on the repository's page (sanitised when
  rendered, as product descriptions are); ``description`` stays the one-line summary.
* ``hub_stars``: one row per account and starred repository; ``hub_repositories.star_count``
  follows it (counted from the rows here).
* ``hub_tags.platforms``: OS, architecture, variant, digest and size of each platform of
  the tag's manifest or image index, read from the registry (NULL until read).

Revision ID: 0601
Revises: 0230
Create Date: 2026-12-03 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0601"
down_revision: str | Sequence[str] | None = "0230"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hub_repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("readme_md", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("hub_tags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("platforms", sa.JSON(), nullable=True))
    op.create_table(
        "hub_stars",
        sa.Column("repository_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["hub_repositories.id"],
            name=op.f("fk_hub_stars_repository_id_hub_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_hub_stars_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", "account_id", name=op.f("pk_hub_stars")),
    )
    op.create_index(op.f("ix_hub_stars_account_id"), "hub_stars", ["account_id"])
    op.execute(
        "UPDATE hub_repositories SET star_count = (SELECT count(*) FROM hub_stars s"
        " WHERE s.repository_id = hub_repositories.id)"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_hub_stars_account_id"), table_name="hub_stars")
    op.drop_table("hub_stars")
    with op.batch_alter_table("hub_tags", schema=None) as batch_op:
        batch_op.drop_column("platforms")
    with op.batch_alter_table("hub_repositories", schema=None) as batch_op:
        batch_op.drop_column("readme_md")
