"""The search index: one document per store listing or hub repository.

A document's primary key is its *rank key*: ascending order is the static ranking (badges,
then popularity), so every full-text backend can walk matches in rank order and stop after
the first page instead of scoring every match (see docs/search.md). The key therefore
changes when a document's static rank changes; ``(source, ref_id)`` is the stable identity.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base, StringList, utcnow

# On SQLite the key must be spelled INTEGER PRIMARY KEY to be the table's rowid (which the
# FTS5 index shares); elsewhere it is a plain BIGINT.
RankKey = BigInteger().with_variant(Integer(), "sqlite")


class SearchDocument(Base):
    __tablename__ = "search_documents"
    __table_args__ = (
        UniqueConstraint("source", "ref_id"),
        Index("ix_search_documents_name_key", "name_key"),
        Index("ix_search_documents_name", "name"),
        Index("ix_search_documents_owner_id", "owner_id"),
    )

    id: Mapped[int] = mapped_column(RankKey, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(String(8))  # store | hub
    ref_id: Mapped[uuid.UUID] = mapped_column()  # Product.id or HubRepository.id
    name: Mapped[str] = mapped_column(String(255))  # "<namespace>/<repo>"
    # Lower-cased last path component: "redis" for "acme/redis" (exact-name ranking).
    name_key: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(default=None)  # publishing org
    title: Mapped[str] = mapped_column(String(200), default="")
    summary: Mapped[str] = mapped_column(String(300), default="")
    kind: Mapped[str] = mapped_column(String(16), default="image")
    status: Mapped[str] = mapped_column(String(16))  # draft|published|suspended|public|private
    publisher: Mapped[str] = mapped_column(String(64), default="")
    publisher_name: Mapped[str] = mapped_column(String(120), default="")
    official: Mapped[bool] = mapped_column(Boolean, default=False)
    certified: Mapped[bool] = mapped_column(Boolean, default=False)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    pricing: Mapped[list[str]] = mapped_column(StringList, default=list)  # free, paid, trial
    price_min: Mapped[int | None] = mapped_column(BigInteger, default=None)
    price_max: Mapped[int | None] = mapped_column(BigInteger, default=None)
    currency: Mapped[str] = mapped_column(String(3), default="")
    categories: Mapped[list[str]] = mapped_column(StringList, default=list)
    platforms: Mapped[list[str]] = mapped_column(StringList, default=list)
    pull_count: Mapped[int] = mapped_column(BigInteger, default=0)
    star_count: Mapped[int] = mapped_column(Integer, default=0)
    popularity: Mapped[int] = mapped_column(Integer, default=0)  # 0..1023, log-scaled, decayed
    # Manifest pulls of the last 30 days (as of when the document was written) and the last
    # change of the listing or push to the repository: the "pulls" and "updated" sorts.
    pulls_30d: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime | None] = mapped_column(default=None)
    # Pre-tokenised text (see store.search.query.tokenize) and facet/visibility tokens: the
    # columns the full-text index covers. Both backends index exactly these tokens.
    fts_name: Mapped[str] = mapped_column(Text, default="")
    fts_title: Mapped[str] = mapped_column(Text, default="")
    fts_summary: Mapped[str] = mapped_column(Text, default="")
    fts_body: Mapped[str] = mapped_column(Text, default="")
    fts_facets: Mapped[str] = mapped_column(Text, default="")
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)
