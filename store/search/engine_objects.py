"""Which database objects belong to the full-text engines rather than to the models.

FTS5 virtual tables (and their shadow tables), the PostgreSQL tsvector column and its GIN
index are created by migration 0003 (search) and have no model, nor has the PostgreSQL-only
index of hub repository names in byte order that the indexer finds sub-repositories with
(migration 0790); Alembic's comparison of models and database must skip them. Use
:func:`include_object` as ``include_object=`` in
``context.configure`` (migrations/env.py) and in ``compare_metadata`` options.
"""

from __future__ import annotations

from typing import Any


def is_engine_object(name: str | None, type_: str, table_name: str | None = None) -> bool:
    if name is None:
        return False
    if type_ == "table":
        return name == "search_fts" or name.startswith("search_fts_")
    if type_ == "index":
        # ix_hub_repositories_name_pattern: PostgreSQL only (text_pattern_ops, migration
        # 0790), for the indexer's look-up of a product's sub-repositories.
        return name.startswith("ix_search_fts_") or name == "ix_hub_repositories_name_pattern"
    if type_ == "column":
        return table_name == "search_documents" and name == "tsv"
    return False


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic include_object hook: False for the search engines' own objects."""
    table = getattr(obj, "table", None)
    table_name = getattr(table, "name", None)
    return not (reflected and compare_to is None and is_engine_object(name, type_, table_name))
