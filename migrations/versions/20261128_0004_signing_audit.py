"""signing and audit: publisher keys, content signatures, certification, push flags, the
hash-chained audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=255), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_events_hash")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_events_seq")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_action_seq", ["action", "seq"], unique=False)
        batch_op.create_index("ix_audit_events_org_seq", ["org_id", "seq"], unique=False)

    op.create_table(
        "publisher_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_by_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["accounts.id"],
            name=op.f("fk_publisher_keys_created_by_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_publisher_keys_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["revoked_by_id"],
            ["accounts.id"],
            name=op.f("fk_publisher_keys_revoked_by_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publisher_keys")),
        sa.UniqueConstraint(
            "organization_id", "fingerprint", name=op.f("uq_publisher_keys_organization_id")
        ),
    )
    with op.batch_alter_table("publisher_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_publisher_keys_fingerprint"), ["fingerprint"], unique=False
        )

    op.create_table(
        "certification_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("submitted_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("submitted_by_id", sa.Uuid(), nullable=True),
        sa.Column("reviewer_id", sa.Uuid(), nullable=True),
        sa.Column("decided_at", store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("certified_digest", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_certification_requests_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["accounts.id"],
            name=op.f("fk_certification_requests_reviewer_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["submitted_by_id"],
            ["accounts.id"],
            name=op.f("fk_certification_requests_submitted_by_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certification_requests")),
    )
    with op.batch_alter_table("certification_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_certification_requests_product_id"), ["product_id"], unique=False
        )
        batch_op.create_index(
            "ix_certification_requests_status", ["status", "submitted_at"], unique=False
        )

    op.create_table(
        "content_signatures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=True),
        sa.Column("digest", sa.String(length=100), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["publisher_keys.id"],
            name=op.f("fk_content_signatures_key_id_publisher_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_content_signatures_product_id_products"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_signatures")),
        sa.UniqueConstraint(
            "key_id", "repository", "digest", name=op.f("uq_content_signatures_key_id")
        ),
    )
    with op.batch_alter_table("content_signatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_content_signatures_product_id"), ["product_id"], unique=False
        )
        batch_op.create_index(
            "ix_content_signatures_repository_digest", ["repository", "digest"], unique=False
        )

    op.create_table(
        "unsigned_push_flags",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=100), nullable=False),
        sa.Column("pushed_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("pushed_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_unsigned_push_flags_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unsigned_push_flags")),
        sa.UniqueConstraint(
            "product_id", "tag", "digest", name=op.f("uq_unsigned_push_flags_product_id")
        ),
    )
    # The one chain-head row every audit append locks (store.audit.service).
    head = sa.table(
        "audit_chain_head",
        sa.column("id", sa.Integer),
        sa.column("seq", sa.BigInteger),
        sa.column("hash", sa.String),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    op.drop_table("unsigned_push_flags")
    with op.batch_alter_table("content_signatures", schema=None) as batch_op:
        batch_op.drop_index("ix_content_signatures_repository_digest")
        batch_op.drop_index(batch_op.f("ix_content_signatures_product_id"))

    op.drop_table("content_signatures")
    with op.batch_alter_table("certification_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_certification_requests_status")
        batch_op.drop_index(batch_op.f("ix_certification_requests_product_id"))

    op.drop_table("certification_requests")
    with op.batch_alter_table("publisher_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_publisher_keys_fingerprint"))

    op.drop_table("publisher_keys")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_org_seq")
        batch_op.drop_index("ix_audit_events_action_seq")

    op.drop_table("audit_events")
    op.drop_table("audit_chain_head")
