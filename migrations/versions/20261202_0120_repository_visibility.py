"""registry: repositories are private unless published or marked public

* ``hub_repositories.visibility``: the namespace owner's setting, ``private`` (default) or
  ``public``.
* ``hub_repositories.private`` (who search shows a repository to) recomputed under the new
  rule: only a repository backing a published product whose active tiers are all free and
  public (or one of that product's sub-repositories) stays public.
* The hub's search documents are removed (they were built under the old rule, which showed
  every repository without a product to everyone); ``store search reindex`` builds them
  again, and every push or pull rebuilds its repository's document.

Revision ID: 0120
Revises: 0201
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0120"
down_revision: str | Sequence[str] | None = "0201"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _product_repository(name: str) -> str:
    parts = name.split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else ""


def upgrade() -> None:
    with op.batch_alter_table("hub_repositories", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("visibility", sa.String(length=16), nullable=False, server_default="private")
        )
    conn = op.get_bind()
    public_products = {
        row.repository
        for row in conn.execute(
            sa.text(
                "SELECT p.repository FROM products p WHERE p.status = 'published'"
                " AND EXISTS (SELECT 1 FROM tiers t WHERE t.product_id = p.id AND t.active)"
                " AND NOT EXISTS (SELECT 1 FROM tiers t WHERE t.product_id = p.id AND t.active"
                " AND NOT (t.billing = 'free' AND t.public))"
            )
        )
    }
    hub = sa.table(
        "hub_repositories", sa.column("id"), sa.column("name"), sa.column("private", sa.Boolean)
    )
    for row in conn.execute(sa.select(hub.c.id, hub.c.name)).all():
        private = _product_repository(row.name) not in public_products
        conn.execute(sa.update(hub).where(hub.c.id == row.id).values(private=private))
    conn.execute(sa.text("DELETE FROM search_documents WHERE source = 'hub'"))


def downgrade() -> None:
    with op.batch_alter_table("hub_repositories", schema=None) as batch_op:
        batch_op.drop_column("visibility")
