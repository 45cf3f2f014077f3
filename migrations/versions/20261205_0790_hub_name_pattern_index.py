"""hub (PostgreSQL): an index of repository names in byte order, for a product's
sub-repositories (``name`` from ``acme/app/`` up to ``acme/app0``)

A listing edit looks up the product's sub-repositories (``acme/app/...``): under the
database's collation the unique index of ``name`` serves neither ``LIKE 'acme/app/%'`` nor
a plain range, so the look-up read the whole table (146 ms at 1,000,000 repositories).
``text_pattern_ops`` compares in byte order, and the look-up asks for that range with its
operators (store.registry.models.names_under). SQLite needs nothing: its unique index has
the binary collation and serves the range as it is.

Revision ID: 0790
Revises: 0770
Create Date: 2026-12-05 04:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0790"
down_revision: str | Sequence[str] | None = "0770"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_hub_repositories_name_pattern "
        "ON hub_repositories (name text_pattern_ops)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_hub_repositories_name_pattern")
