"""PostgreSQL backend: a narrow side table of tsvectors, one per field tier, each with a GIN
index.

The tsvectors are written from Python as literals (lexemes, positions, weights) from the
same tokens the SQLite backend indexes, so both backends match exactly the same documents.
``search_fts_terms`` (one row per document, keyed by its rank key; the foreign key cascades
deletes and rank-key changes) holds:

* ``tags`` — facet and visibility tokens only (no-word queries: facet browsing);
* ``head`` — name (weight A) and title (B) + tags: the "name" and "name+title" tiers;
* ``mid`` — name, title, summary + tags: the "summary" tier;
* ``tsv`` — every field + tags: the "anywhere" tier and the facet pass.

Why not one weighted tsvector on search_documents: the GIN index does not store weights, so
a tier query (``'redis':A``) rechecked every match of the word anywhere against a
compressed, document-size tsvector, and the planner, estimating it like an unrestricted
word, walked the whole primary key for words common in descriptions but absent from names
(≈ 1 s at 200k). Each tier now has a tsvector holding only its fields (only ``head`` needs
weights, and rechecks a tiny value), in rows of ≈ 1.6 KB: below the TOAST threshold, so no
decompression when a row is evaluated.

Word queries are GIN bitmap scans plus a top-N sort on the rank key whatever the planner's
estimate (``ORDER BY id + 0``; sequential scans and JIT off during a search), restricted to
*rank bands* (see :meth:`PostgresBackend._banded`): the heap rows visited are those of the
best-ranked matches, not of every match. No-word queries (facet browsing) use ``tags``
(small, inline), where walking the rank-key index is cheap too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, text

from store.search import facets
from store.search.backend import Criteria
from store.search.query import TIER_WEIGHTS, tsquery_excluded, tsquery_text, tsquery_tokens

_INDEXES = tuple(
    f"CREATE INDEX ix_search_fts_{c} ON search_fts_terms USING gin ({c}) WITH (fastupdate = off)"
    for c in ("tags", "head", "mid", "tsv")
)
CREATE_STATEMENTS = (
    """CREATE TABLE search_fts_terms (
        id bigint PRIMARY KEY
            REFERENCES search_documents (id) ON DELETE CASCADE ON UPDATE CASCADE,
        tags tsvector NOT NULL,
        head tsvector NOT NULL,
        mid tsvector NOT NULL,
        tsv tsvector NOT NULL
    )""",
    *_INDEXES,
)
DROP_STATEMENTS = ("DROP TABLE IF EXISTS search_fts_terms",)

# Field → (weight, first position). Gaps keep phrases from spanning two fields.
_NAME, _TITLE = ("fts_name", "A", 1), ("fts_title", "B", 101)
_SUMMARY, _BODY = ("fts_summary", "C", 301), ("fts_body", "D", 1001)
_MAX_POS = 16383


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _literal(doc: dict[str, Any], fields: Sequence[tuple[str, str, int]], weighted: bool) -> str:
    positions: dict[str, list[str]] = {}
    for column, weight, start in fields:
        w = weight if weighted else ""
        for offset, tok in enumerate(doc[column].split()):
            positions.setdefault(tok, []).append(f"{min(start + offset, _MAX_POS)}{w}")
    parts = [f"{_quote(t)}:{','.join(p[:256])}" for t, p in positions.items()]
    parts += [_quote(t) for t in doc["fts_facets"].split() if t not in positions]
    return " ".join(parts)


# Rank bands: the rank key's top bits (badge class and popularity, 16 popularity steps per
# band, a factor of √2 in pulls): bands 0..511, best first. Every word tsvector carries its
# document's band at three granularities (r: one band, rb: 8 bands, rc: 64 bands), so "the
# matches in bands lo..hi" is an intersection inside the GIN index with a handful of tokens,
# and a query visits the heap rows of the best-ranked matches only, not of every match.
_BAND_SHIFT = 54
_LAST_BAND = (1 << 63) - 1 >> _BAND_SHIFT
_BAND_LEVELS = ((64, "rc"), (8, "rb"), (1, "r"))


def band_tokens(key: int) -> list[str]:
    band = key >> _BAND_SHIFT
    return [f"{prefix}:{band // size}" for size, prefix in _BAND_LEVELS]


def range_tokens(first: int, last: int) -> list[str]:
    """Tokens covering exactly the bands first..last (every band number, whether or not
    any document is in it now)."""
    tokens, band = [], first
    while band <= last:
        for size, prefix in _BAND_LEVELS:
            if band % size == 0 and band + size - 1 <= last:
                tokens.append(f"{prefix}:{band // size}")
                band += size
                break
    return tokens


def tsvector_literals(doc: dict[str, Any]) -> dict[str, str]:
    band = "".join(" " + _quote(t) for t in band_tokens(doc["id"]))
    return {
        "tags": " ".join(_quote(t) for t in doc["fts_facets"].split()),
        "head": _literal(doc, (_NAME, _TITLE), True) + band,
        "mid": _literal(doc, (_NAME, _TITLE, _SUMMARY), False) + band,
        "tsv": _literal(doc, (_NAME, _TITLE, _SUMMARY, _BODY), False) + band,
    }


def tsquery(criteria: Criteria, weights: str = "", *, excluded: bool = True) -> str:
    parts = []
    words = tsquery_text(criteria.query, weights, excluded=excluded)
    if words:
        parts.append(words)
    if criteria.filter_tokens:
        parts.append(tsquery_tokens(list(criteria.filter_tokens)))
    if not parts:
        parts.append(tsquery_tokens([facets.ALL]))
    scope = criteria.scope
    if scope.everything:
        parts.append(f"!{tsquery_tokens([facets.HIDDEN])}")
    else:
        restricted = tsquery_tokens([facets.RESTRICTED])
        if scope.namespaces:
            mine = tsquery_tokens(
                [facets.visibility_token(ns) for ns in scope.namespaces], any_of=True
            )
            restricted = f"({restricted} & !{mine})"
        parts.append(f"!{restricted}")
    return " & ".join(parts)


# Tier → the tsvector column holding exactly the tier's fields, and the weights needed.
_TIER_COLUMN = {3: ("head", TIER_WEIGHTS[3]), 2: ("head", ""), 1: ("mid", ""), 0: ("tsv", "")}
_TIER_SQL = {
    column: f"SELECT id FROM search_fts_terms WHERE {column} @@ CAST(:q AS tsquery)"  # noqa: S608
    for column in ("head", "mid", "tsv")
}
# tags as text: "'k:image' 's:hub' ..." (facet tokens hold no quote or space).
_FACET_SQL = "SELECT id, CAST(tags AS text) FROM search_fts_terms WHERE "


_FIRST_STEP = 16  # the first band range covers about this many documents per result wanted
_HISTOGRAM_TTL = 300.0
_histograms: dict[str, tuple[float, list[tuple[int, int]]]] = {}


def _band_histogram(conn: Connection) -> list[tuple[int, int]]:
    """(band, about how many documents are in this and better bands), best band first,
    from a sample of about 20,000 rows; cached for a few minutes per database. Only the
    speed of a query depends on it being accurate or current."""
    key = conn.engine.url.render_as_string(hide_password=True)
    now = time.monotonic()
    cached = _histograms.get(key)
    if cached is not None and now - cached[0] < _HISTOGRAM_TTL:
        return cached[1]
    rows = conn.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'search_fts_terms'"))
    percent = 100.0 if not rows or rows < 40_000 else 100.0 * 20_000 / rows
    counts = conn.execute(
        text(
            f"SELECT id >> {_BAND_SHIFT} AS band, count(*) FROM search_fts_terms "  # noqa: S608
            "TABLESAMPLE SYSTEM (:p) GROUP BY band ORDER BY band"
        ),
        {"p": percent},
    ).all()
    total, cumulative = 0, []
    for band, n in counts:
        total += round(n * 100.0 / percent)
        cumulative.append((int(band), total))
    _histograms[key] = (now, cumulative)
    return cumulative


class PostgresBackend:
    """One instance per search (see backend_for): it remembers what the facet pass saw."""

    name = "postgresql-tsvector"
    _complete = False

    @contextmanager
    def planning(self, conn: Connection) -> Iterator[None]:
        """For one search: no sequential scans (a word query is a GIN bitmap scan whatever
        the estimate), no JIT (the disabled-plan costs would trigger it); restored after."""
        seqscan, jit = conn.execute(
            text(
                "SELECT current_setting('enable_seqscan'), current_setting('jit'), "
                "set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)"
            )
        ).one()[:2]
        try:
            yield
        finally:
            conn.execute(
                text("SELECT set_config('enable_seqscan', :s, true), set_config('jit', :j, true)"),
                {"s": seqscan, "j": jit},
            )

    def ranked_ids(self, conn: Connection, criteria: Criteria, tier: int, limit: int) -> list[int]:
        column, weights = _TIER_COLUMN[tier]
        if tier == 0:
            q, extra, params = tsquery(criteria), "", {}
        else:
            # head/mid lack the description: exclusions are checked against tsv.
            q, extra, params = tsquery(criteria, weights, excluded=False), "", {}
            excluded = tsquery_excluded(criteria.query)
            if excluded:
                extra, params = " AND NOT tsv @@ CAST(:x AS tsquery)", {"x": excluded}
        # Tier matches are a subset of the facet pass's matches: when that pass saw all of
        # them (fewer than it asked for), one unbanded query visits at most that many rows.
        rows = self._banded(conn, _TIER_SQL[column] + extra, q, params, limit, self._complete)
        return [r[0] for r in rows]

    def facet_rows(
        self, conn: Connection, criteria: Criteria, limit: int
    ) -> Sequence[tuple[int, str]]:
        if criteria.query.empty:
            # Only tags: small and inline, so walking the rank-key index (few filters) or a
            # GIN bitmap (rare filter values) are both cheap; the planner's estimates of
            # whole-token frequencies are good.
            rows = conn.execute(
                text(_FACET_SQL + "tags @@ CAST(:q AS tsquery) ORDER BY id LIMIT :n"),
                {"q": tsquery(criteria), "n": limit},
            ).all()
        else:
            rows = self._banded(
                conn, _FACET_SQL + "tsv @@ CAST(:q AS tsquery)", tsquery(criteria), {}, limit
            )
            self._complete = len(rows) < limit
        return [(r[0], r[1].replace("'", "")) for r in rows]

    def _banded(
        self,
        conn: Connection,
        sql: str,
        q: str,
        params: dict[str, Any],
        limit: int,
        unbanded: bool = False,
    ) -> list[Any]:
        """The first ``limit`` rows of ``sql`` (which filters on ``@@ :q``) in rank order.

        Asks for the matches in the best rank bands first (bands 0..k covering about
        16 times ``limit`` documents by the cached histogram), then in the following bands,
        growing with the density seen, until ``limit`` rows are found or every band was
        asked. The ranges are contiguous and disjoint in band numbers (a stale histogram
        costs speed, never results), so the concatenated results are in rank order."""
        cumulative = [] if unbanded else _band_histogram(conn)
        total = cumulative[-1][1] if cumulative else 0
        out: list[Any] = []
        first, target, index = 0, _FIRST_STEP * limit, 0
        while len(out) < limit and first <= _LAST_BAND:
            while index < len(cumulative) and cumulative[index][1] < target:
                index += 1
            last = cumulative[index][0] if index < len(cumulative) - 1 else _LAST_BAND
            if first == 0 and last == _LAST_BAND:
                query = q
            else:
                query = f"{q} & {tsquery_tokens(range_tokens(first, last), any_of=True)}"
            out += conn.execute(
                text(sql + " ORDER BY id + 0 LIMIT :n"),
                {**params, "q": query, "n": limit - len(out)},
            ).all()
            # Next: as many documents again as the density seen so far says are needed
            # (twice over), at least as many as covered so far; straight to "the rest" when
            # that is most of it.
            covered = cumulative[index][1] if index < len(cumulative) else total
            wanted = (limit - len(out)) * covered / len(out) * 2 if out else total
            target = covered + max(covered, wanted)
            if target > total / 2:
                target = total + 1
            first, index = last + 1, index + 1
        return out

    def after_write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        self._write(conn, docs)

    def _write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        conn.execute(
            text(
                "INSERT INTO search_fts_terms (id, tags, head, mid, tsv) VALUES "
                "(:id, CAST(:tags AS tsvector), CAST(:head AS tsvector), "
                "CAST(:mid AS tsvector), CAST(:tsv AS tsvector)) "
                "ON CONFLICT (id) DO UPDATE SET tags = excluded.tags, head = excluded.head, "
                "mid = excluded.mid, tsv = excluded.tsv"
            ),
            [{"id": d["id"], **tsvector_literals(d)} for d in docs],
        )

    def begin_bulk(self, conn: Connection) -> None:
        """Many documents are about to be rewritten and rebuild() will follow: nothing to
        maintain row by row (after_write is not called meanwhile)."""

    def rebuild(self, conn: Connection) -> None:
        """search_fts_terms from search_documents in one pass, in rank-key order (rows of
        similar rank share pages); the GIN indexes are built once at the end rather than
        maintained row by row (they are locked until the transaction ends)."""
        for statement in _INDEXES:
            conn.execute(text(f"DROP INDEX IF EXISTS {statement.split()[2]}"))
        conn.execute(text("DELETE FROM search_fts_terms"))
        last = -(1 << 63)
        while True:
            rows = (
                conn.execute(
                    text(
                        "SELECT id, fts_name, fts_title, fts_summary, fts_body, fts_facets "
                        "FROM search_documents WHERE id > :last ORDER BY id LIMIT 2000"
                    ),
                    {"last": last},
                )
                .mappings()
                .all()
            )
            if not rows:
                break
            self._write(conn, [dict(r) for r in rows])
            last = rows[-1]["id"]
        for statement in _INDEXES:
            conn.execute(text(statement))
        _histograms.clear()
