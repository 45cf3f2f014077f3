"""SQLite FTS5 backend: two external-content FTS5 tables over search_documents.

The FTS5 rowid *is* the document's rank key, so ``ORDER BY rowid LIMIT n`` walks the
doclists in rank order and stops after n matches: no bm25, no scoring of every match.

* ``search_fts`` indexes every field (name, title, summary, description) and the facet
  tokens: the "anywhere" and "summary" tiers, the facet pass.
* ``search_fts_head`` indexes only name, title and the facet tokens: the "name" and
  "name+title" tiers. A column filter on the big table would walk the word's doclist from
  every description until enough matches *in names* turn up (all of it for a word common in
  descriptions but absent from names); the head table's doclists hold only name/title hits.
* ``search_fts_facets`` holds the facet tokens again in a narrow rowid table: the facet pass
  reads them for up to 501 matches, and narrow rows in rank order share pages.

Triggers (created by the migration, the one definition of these tables) keep all three in
step inside the same transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from store.search import facets
from store.search.backend import Criteria
from store.search.query import fts5_excluded, fts5_text, fts5_tokens

if TYPE_CHECKING:
    from store.search.workers import WorkerPool

# The FTS5 tables and their triggers are the migrations' (0003): the triggers are read back
# from the database when they must be dropped for a bulk rewrite and made again after it.
_TRIGGERS = ("search_fts_insert", "search_fts_delete", "search_fts_update")
_TRIGGER_DDL = text(
    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
    "('search_fts_insert', 'search_fts_delete', 'search_fts_update') ORDER BY name"
)
_SAVED_TRIGGERS = "store.search.sqlite_fts.triggers"


def _trigger_ddl(conn: Connection) -> list[str]:
    return [str(row.sql) for row in conn.execute(_TRIGGER_DDL)]


def _drop_triggers(conn: Connection) -> list[str]:
    """Drop the maintenance triggers; their DDL, to make them again in this transaction."""
    ddl = conn.info.pop(_SAVED_TRIGGERS, None)
    if ddl is None:
        ddl = _trigger_ddl(conn)
    for name in _TRIGGERS:
        conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    return list(ddl)


_HEAD_TIERS = (2, 3)


def match_expression(criteria: Criteria, tier: int, *, head: bool = False) -> str:
    """The MATCH expression of a tier's query (``head``: for search_fts_head, whose
    columns cannot evaluate exclusions; those are applied against search_fts)."""
    parts = []
    words = fts5_text(criteria.query, tier, excluded=not head)
    if words:
        parts.append(words)
    if criteria.filter_tokens:
        parts.append(fts5_tokens(list(criteria.filter_tokens)))
    if not parts:
        parts.append(fts5_tokens([facets.ALL]))
    expr = " AND ".join(f"({p})" for p in parts)
    scope = criteria.scope
    if scope.everything:
        return f"({expr}) NOT {fts5_tokens([facets.HIDDEN])}"
    restricted = f'"{facets.RESTRICTED}"'
    if scope.tokens:
        mine = " OR ".join(f'"{token}"' for token in scope.tokens)
        restricted = f"({restricted} NOT ({mine}))"
    return f"({expr}) NOT (fts_facets : {restricted})"


class SqliteBackend:
    name = "sqlite-fts5"

    def planning(self, conn: Connection) -> AbstractContextManager[None]:
        return nullcontext()

    def tier_ids(self, conn: Connection, criteria: Criteria, limit: int) -> dict[int, list[int]]:
        return {tier: self._tier_ids(conn, criteria, tier, limit) for tier in (3, 2, 1)}

    def _tier_ids(self, conn: Connection, criteria: Criteria, tier: int, limit: int) -> list[int]:
        if tier in _HEAD_TIERS:
            params: dict[str, Any] = {"m": match_expression(criteria, tier, head=True), "n": limit}
            sql = "SELECT rowid FROM search_fts_head WHERE search_fts_head MATCH :m"
            if criteria.query.excluded:
                sql += " AND rowid NOT IN (SELECT rowid FROM search_fts WHERE search_fts MATCH :x)"
                params["x"] = fts5_excluded(criteria.query)
            rows = conn.execute(text(sql + " ORDER BY rowid LIMIT :n"), params)
        else:
            rows = conn.execute(
                text(
                    "SELECT rowid FROM search_fts WHERE search_fts MATCH :m ORDER BY rowid LIMIT :n"
                ),
                {"m": match_expression(criteria, tier), "n": limit},
            )
        return [r[0] for r in rows]

    def facet_rows(
        self, conn: Connection, criteria: Criteria, limit: int
    ) -> Sequence[tuple[int, str]]:
        # Facet tokens come from the narrow side table: the FTS5 content lookup would read
        # every indexed column (descriptions included) of each match.
        rows = conn.execute(
            text(
                "SELECT f.id, f.tokens FROM search_fts JOIN search_fts_facets AS f "
                "ON f.id = search_fts.rowid WHERE search_fts MATCH :m "
                "ORDER BY search_fts.rowid LIMIT :n"
            ),
            {"m": match_expression(criteria, 0), "n": limit},
        )
        return [(r[0], r[1]) for r in rows.all()]

    def after_write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        return None  # the triggers did it

    def after_move(self, conn: Connection, moves: Sequence[tuple[int, int]]) -> None:
        return None  # the update trigger re-filed the rows under their new rowids

    def begin_bulk(self, conn: Connection) -> None:
        """Many documents are about to be rewritten and rebuild() will follow: stop the
        row-by-row maintenance (the triggers) until then (same transaction)."""
        abandon_build(conn)
        conn.info[_SAVED_TRIGGERS] = _drop_triggers(conn)

    def rebuild(self, conn: Connection, pool: WorkerPool | None = None) -> None:
        # FTS5 builds both indexes in C in this process: nothing for the workers.
        for statement in _drop_triggers(conn):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO search_fts(search_fts) VALUES ('rebuild')"))
        conn.execute(text("INSERT INTO search_fts_head(search_fts_head) VALUES ('rebuild')"))
        conn.execute(text("DELETE FROM search_fts_facets"))
        conn.execute(
            text(
                "INSERT INTO search_fts_facets(id, tokens) "
                "SELECT id, fts_facets FROM search_documents ORDER BY id"
            )
        )


# --- full rebuild beside the live index -------------------------------------------------------
#
# A full reindex (indexer.full_reindex) builds new tables beside the live ones in short
# transactions of its own and swaps them in with one more; writers and searches go on
# meanwhile. search_fts_build holds the build's state: ``filled`` (every document whose
# rank key is at most this is in the new tables), ``quiet`` (set only inside the reindex's
# own transactions: the documents it inserts are left out of the live tables, which the
# swap replaces) and the live triggers' DDL as the migrations made them. While it lasts,
# the build triggers keep the filled part of the new tables in step with search_documents
# as others write, so the new tables are exact up to ``filled`` at every commit, and the
# live triggers are replaced by variants that skip the quiet inserts and remove from the
# live tables only what is in them (a document the reindex inserted quietly is not).

_NEXT = "_next"
_OLD = "_old"
_LIVE_TABLES = ("search_fts", "search_fts_head", "search_fts_facets")
_BUILD = "search_fts_build"
_BUILD_TRIGGERS = ("search_fts_next_insert", "search_fts_next_delete", "search_fts_next_update")
_FIRST_KEY, _LAST_KEY = -(1 << 63), (1 << 63) - 1
_FULL = "fts_name, fts_title, fts_summary, fts_body, fts_facets"
_HEAD = "fts_name, fts_title, fts_facets"
_FILLED = "(SELECT filled FROM search_fts_build)"
_LIVE_TRIGGERS = ("search_fts_insert", "search_fts_delete", "search_fts_update")


def _columns(prefix: str, names: str) -> str:
    return ", ".join(f"{prefix}.{c}" for c in names.split(", "))


def _build_trigger_ddl() -> list[str]:
    """Triggers on search_documents that write into the new tables what the live triggers
    write into the live ones, for the rows whose rank key the fill has passed."""

    def add(row: str) -> str:
        return (
            f"INSERT INTO search_fts_next(rowid, {_FULL}) "
            f"SELECT {row}.id, {_columns(row, _FULL)} WHERE {row}.id <= {_FILLED}; "
            f"INSERT INTO search_fts_head_next(rowid, {_HEAD}) "
            f"SELECT {row}.id, {_columns(row, _HEAD)} WHERE {row}.id <= {_FILLED}; "
            "INSERT INTO search_fts_facets_next(id, tokens) "
            f"SELECT {row}.id, {row}.fts_facets WHERE {row}.id <= {_FILLED};"
        )

    remove = (
        f"INSERT INTO search_fts_next(search_fts_next, rowid, {_FULL}) "  # noqa: S608
        f"SELECT 'delete', old.id, {_columns('old', _FULL)} WHERE old.id <= {_FILLED}; "
        f"INSERT INTO search_fts_head_next(search_fts_head_next, rowid, {_HEAD}) "
        f"SELECT 'delete', old.id, {_columns('old', _HEAD)} WHERE old.id <= {_FILLED}; "
        "DELETE FROM search_fts_facets_next WHERE id = old.id;"
    )
    return [
        f"CREATE TRIGGER search_fts_next_insert AFTER INSERT ON search_documents BEGIN "
        f"{add('new')} END",
        f"CREATE TRIGGER search_fts_next_delete AFTER DELETE ON search_documents BEGIN "
        f"{remove} END",
        f"CREATE TRIGGER search_fts_next_update AFTER UPDATE OF id, {_FULL} "
        f"ON search_documents BEGIN {remove} {add('new')} END",
    ]


def _quiet_live_trigger_ddl() -> list[str]:
    """The live triggers while a build lasts: inserts by the reindex itself (``quiet``)
    are not indexed in the live tables, and a document is removed from them only if it is
    there (its facet row, written with it, says so)."""
    there = "EXISTS (SELECT 1 FROM search_fts_facets WHERE id = old.id)"
    add = (
        f"INSERT INTO search_fts(rowid, {_FULL}) VALUES (new.id, {_columns('new', _FULL)}); "  # noqa: S608
        f"INSERT INTO search_fts_head(rowid, {_HEAD}) VALUES (new.id, {_columns('new', _HEAD)}); "
        "INSERT INTO search_fts_facets(id, tokens) VALUES (new.id, new.fts_facets);"
    )
    remove = (
        f"INSERT INTO search_fts(search_fts, rowid, {_FULL}) "  # noqa: S608
        f"SELECT 'delete', old.id, {_columns('old', _FULL)} WHERE {there}; "
        f"INSERT INTO search_fts_head(search_fts_head, rowid, {_HEAD}) "
        f"SELECT 'delete', old.id, {_columns('old', _HEAD)} WHERE {there}; "
        "DELETE FROM search_fts_facets WHERE id = old.id;"
    )
    return [
        "CREATE TRIGGER search_fts_insert AFTER INSERT ON search_documents "  # noqa: S608
        f"WHEN (SELECT quiet FROM {_BUILD}) = 0 BEGIN {add} END",
        f"CREATE TRIGGER search_fts_delete AFTER DELETE ON search_documents BEGIN {remove} END",
        f"CREATE TRIGGER search_fts_update AFTER UPDATE OF id, {_FULL} ON search_documents "
        f"BEGIN {remove} {add} END",
    ]


def _table_ddl(conn: Connection, table: str) -> str:
    return str(conn.scalar(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}))


_CREATE_TABLE = re.compile(r'^(CREATE\s+(?:VIRTUAL\s+)?TABLE\s+)("?)(\w+)\2', re.IGNORECASE)


def _renamed(ddl: str, new: str) -> str:
    """``CREATE [VIRTUAL] TABLE name ...`` (the name quoted once a table was renamed) as a
    table named ``new``."""
    renamed, found = _CREATE_TABLE.subn(lambda m: m.group(1) + new, ddl, count=1)
    if not found:
        raise ValueError(f"not a CREATE TABLE statement: {ddl[:60]}")
    return renamed


def _saved_live_triggers(conn: Connection) -> list[str] | None:
    """The live triggers as the migrations made them, saved by a build still under way
    (None: no build)."""
    if not conn.scalar(text("SELECT 1 FROM sqlite_master WHERE name = :t"), {"t": _BUILD}):
        return None
    return list(json.loads(conn.scalar(text(f"SELECT live_triggers FROM {_BUILD}"))))  # noqa: S608


def _drop_build(conn: Connection) -> None:
    for name in _BUILD_TRIGGERS:
        conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    for table in _LIVE_TABLES:
        for suffix in (_NEXT, _OLD):
            conn.execute(text(f"DROP TABLE IF EXISTS {table + suffix}"))
    conn.execute(text(f"DROP TABLE IF EXISTS {_BUILD}"))


def abandon_build(conn: Connection) -> None:
    """Drop what a build that did not finish left behind (its tables and triggers) and
    give the live tables their own triggers back: for a caller that rebuilds the live
    tables in this transaction (the live tables lack the documents that build inserted)."""
    live = _saved_live_triggers(conn)
    _drop_build(conn)
    if live is not None:
        for name in _LIVE_TRIGGERS:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        for statement in live:
            conn.execute(text(statement))


def begin_build(conn: Connection) -> None:
    """Empty tables beside the live ones, shaped as the migrations made those (their DDL
    read back from the database), the build triggers and the live ones' variants. A build
    that did not finish is dropped first; the live triggers it replaced stay replaced (the
    live tables lack the documents it inserted quietly) until a swap."""
    live = _saved_live_triggers(conn)
    _drop_build(conn)
    if live is None:
        live = _trigger_ddl(conn)
    for table in _LIVE_TABLES:
        conn.execute(text(_renamed(_table_ddl(conn, table), table + _NEXT)))
    conn.execute(
        text(
            f"CREATE TABLE {_BUILD} (filled INTEGER NOT NULL, quiet INTEGER NOT NULL, "
            "live_triggers TEXT NOT NULL)"
        )
    )
    conn.execute(
        text(f"INSERT INTO {_BUILD} (filled, quiet, live_triggers) VALUES (:k, 0, :t)"),  # noqa: S608
        {"k": _FIRST_KEY, "t": json.dumps(live)},
    )
    for statement in _build_trigger_ddl():
        conn.execute(text(statement))
    for name in _LIVE_TRIGGERS:
        conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    for statement in _quiet_live_trigger_ddl():
        conn.execute(text(statement))


def quiet(conn: Connection, on: bool) -> None:
    """Documents this transaction inserts from here (``on``) are not indexed in the live
    tables (they are in the new ones the swap puts in their place). Turned off again in
    the same transaction, so no other transaction ever sees it on."""
    conn.execute(text(f"UPDATE {_BUILD} SET quiet = :q"), {"q": int(on)})  # noqa: S608


def fill(conn: Connection, batch: int) -> bool:
    """The next ``batch`` documents (in rank-key order) written into the new tables; True
    once every document is in them (the last, shorter batch written too)."""
    start = conn.scalar(text(f"SELECT filled FROM {_BUILD}"))  # noqa: S608
    if start == _LAST_KEY:
        return True
    end = conn.scalar(
        text("SELECT id FROM search_documents WHERE id > :s ORDER BY id LIMIT 1 OFFSET :n"),
        {"s": start, "n": batch - 1},
    )
    _fill_range(conn, start, _LAST_KEY if end is None else end)
    return end is None


def _fill_range(conn: Connection, start: int, end: int) -> int:
    rows = {"s": start, "e": end}
    where = "FROM search_documents WHERE id > :s AND id <= :e ORDER BY id"
    count = conn.execute(
        text(f"INSERT INTO search_fts_next(rowid, {_FULL}) SELECT id, {_FULL} {where}"),
        rows,
    ).rowcount
    conn.execute(
        text(f"INSERT INTO search_fts_head_next(rowid, {_HEAD}) SELECT id, {_HEAD} {where}"),
        rows,
    )
    conn.execute(
        text(f"INSERT INTO search_fts_facets_next(id, tokens) SELECT id, fts_facets {where}"),
        rows,
    )
    conn.execute(text(f"UPDATE {_BUILD} SET filled = :e"), {"e": end})  # noqa: S608
    return int(count)


def swap(conn: Connection) -> int:
    """The documents written since the last batch filled in, then the new tables put in
    the live ones' place (the old ones renamed, for :func:`drop_old`) and the live
    triggers as the migrations made them over the new tables. Returns how many documents
    were filled in here."""
    start = conn.scalar(text(f"SELECT filled FROM {_BUILD}"))  # noqa: S608
    caught_up = _fill_range(conn, start, _LAST_KEY) if start < _LAST_KEY else 0
    live = _saved_live_triggers(conn) or []
    for name in (*_BUILD_TRIGGERS, *_LIVE_TRIGGERS):
        conn.execute(text(f"DROP TRIGGER {name}"))
    for table in _LIVE_TABLES:
        conn.execute(text(f"ALTER TABLE {table} RENAME TO {table + _OLD}"))
        conn.execute(text(f"ALTER TABLE {table + _NEXT} RENAME TO {table}"))
    for statement in live:
        conn.execute(text(statement))
    conn.execute(text(f"DROP TABLE {_BUILD}"))
    return caught_up


# The bulk of the replaced tables: FTS5's segment pages (search_fts_old_data and
# search_fts_head_old_data, but their first records: the structure and averages FTS5 needs
# to open the table, to drop it) and the facet rows, deleted a batch per transaction
# before the tables are dropped, so no transaction frees the pages of a whole index (at
# 1,000,000 documents, gigabytes) while writers wait.
_OLD_ROWS = (
    ("search_fts_old_data", "WHERE rowid > 10"),
    ("search_fts_head_old_data", "WHERE rowid > 10"),
    ("search_fts_facets_old", ""),
)
_OLD_BATCH = 2000


def empty_old(conn: Connection) -> bool:
    """Up to ``_OLD_BATCH`` rows of the replaced tables deleted; True once they are empty."""
    for table, where in _OLD_ROWS:
        if not conn.scalar(text("SELECT 1 FROM sqlite_master WHERE name = :t"), {"t": table}):
            continue
        deleted = conn.execute(
            text(
                f"DELETE FROM {table} WHERE rowid IN "  # noqa: S608
                f"(SELECT rowid FROM {table} {where} ORDER BY rowid LIMIT {_OLD_BATCH})"
            )
        ).rowcount
        if deleted:
            return False
    return True


def drop_old(conn: Connection) -> None:
    """The replaced tables dropped (after the swap committed and :func:`empty_old`)."""
    for table in _LIVE_TABLES:
        conn.execute(text(f"DROP TABLE IF EXISTS {table + _OLD}"))
