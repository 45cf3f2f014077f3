"""PostgreSQL backend: narrow side tables of tsvectors, one per field tier, each with a GIN
index.

The tsvectors are written from Python as literals (lexemes, positions, weights) from the
same tokens the SQLite backend indexes, so both backends match exactly the same documents.
One row per document in each table, keyed by its rank key (the foreign keys cascade deletes
and rank-key changes):

* ``search_fts_terms.tags`` — facet and visibility tokens only (no-word queries: facet
  browsing);
* ``search_fts_terms.tsv`` — every field + tags: the "anywhere" tier and the facet pass (a
  summary the body starts with indexed once, see :func:`body_repeats_summary`);
* ``search_fts_fields.head`` — name (weight A) and title (B) + tags: the "name" and
  "name+title" tiers;
* ``search_fts_fields.mid`` — name, title, summary + tags: the "summary" tier.

Why not one weighted tsvector on search_documents: the GIN index does not store weights, so
a tier query (``'redis':A``) rechecked every match of the word anywhere against a
compressed, document-size tsvector, and the planner, estimating it like an unrestricted
word, walked the whole primary key for words common in descriptions but absent from names
(≈ 1 s at 200k). Each tier now has a tsvector holding only its fields (only ``head`` needs
weights, and rechecks a small value). Two tables rather than one: with the prefix lexemes
(query.PREFIX_MARK) a row holding all four passed the 2 KB TOAST threshold, and a phrase
recheck then read the compressed or out-of-line tsvector of every candidate.

Word queries are GIN bitmap scans plus a top-N sort on the rank key whatever the planner's
estimate (``ORDER BY id + 0``; see :meth:`PostgresBackend.planning`), restricted to *rank
bands* (see :meth:`PostgresBackend._banded`): the heap rows visited are those of the
best-ranked matches, not of every match. No-word queries (facet browsing) use ``tags``
(small, inline), where walking the rank-key index is cheap too.
"""

from __future__ import annotations

import bisect
import math
import struct
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache, partial
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from store.search import facets
from store.search.backend import Criteria
from store.search.query import (
    HEAD_PREFIX,
    PREFIX_MARK,
    SHORT_PREFIXES,
    TIER_WEIGHTS,
    Expansions,
    Phrase,
    gram,
    gram_pairs,
    short_prefix,
    tsquery_excluded,
    tsquery_prefix_key,
    tsquery_text,
    tsquery_tokens,
)

if TYPE_CHECKING:
    from store.search.workers import Spread, WorkerPool

# The tables, their GIN indexes and statistics targets are the migrations' (0003, 0006);
# rebuild drops the indexes and makes them again from their definitions as the database
# holds them.
_INDEX_DDL = text(
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
    "AND tablename IN ('search_fts_terms', 'search_fts_fields') "
    "AND indexname LIKE 'ix\\_search\\_fts\\_%' ORDER BY indexname"
)

# Field → (weight, first position). Gaps keep phrases from spanning two fields.
_NAME, _TITLE = ("fts_name", "A", 1), ("fts_title", "B", 101)
_SUMMARY, _BODY = ("fts_summary", "C", 301), ("fts_body", "D", 1001)
_MAX_POS = 16383


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


@lru_cache(maxsize=1 << 18)
def _lexemes(token: str) -> tuple[str, str | None]:
    """A word's lexeme and its 3-character prefix's lexeme (query.PREFIX_MARK; None for a
    shorter word), quoted for a tsvector literal (cached: a reindex quotes the same words
    millions of times)."""
    n = SHORT_PREFIXES[0]
    return _quote(token), _quote(PREFIX_MARK + token[:n]) if len(token) >= n else None


def _literal(doc: dict[str, Any], fields: Sequence[tuple[str, str, int]], weighted: bool) -> str:
    # Word → its positions (at most 256, as PostgreSQL keeps), then each prefix lexeme the
    # positions of the words it starts: one dictionary step per word occurrence. ``fields``
    # start with name and title, whose words' 2-character prefixes are lexemes too
    # (query.HEAD_PREFIX: a 2-character prefix matches names and titles only), with the
    # positions of those words in names and titles.
    positions: dict[str, list[str]] = {}
    head: dict[str, list[str]] = {}
    for column, weight, start in fields:
        w = weight if weighted else ""
        in_head = start < _SUMMARY[2]
        for offset, tok in enumerate(doc[column].split(), start):
            position = f"{offset if offset < _MAX_POS else _MAX_POS}{w}"
            if in_head and len(tok) >= HEAD_PREFIX:
                named = head.setdefault(_quote(PREFIX_MARK + tok[:HEAD_PREFIX]), [])
                if len(named) < 256:
                    named.append(position)
            held = positions.get(tok)
            if held is None:
                positions[tok] = [position]
            elif len(held) < 256:
                held.append(position)
    parts = []
    prefixes: dict[str, list[str]] = {}
    for tok, held in positions.items():
        lexeme, prefix = _lexemes(tok)
        parts.append(f"{lexeme}:{','.join(held)}")
        if prefix is not None:
            shared = prefixes.get(prefix)
            if shared is None:
                prefixes[prefix] = held
            else:
                # Words sharing a prefix: their positions merged, the first 256 kept.
                merged = sorted(shared + held, key=_position)
                prefixes[prefix] = merged[:256]
    parts += [f"{lexeme}:{','.join(held)}" for lexeme, held in prefixes.items()]
    parts += [f"{lexeme}:{','.join(held)}" for lexeme, held in head.items()]
    parts += [_quote(t) for t in doc["fts_facets"].split() if t not in positions]
    return " ".join(parts)


def _position(position: str) -> int:
    return int(position.rstrip("AB"))


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


def _band_filter(first: int, last: int, cumulative: list[tuple[int, int]]) -> str:
    """The tsquery part restricting matches to bands first..last: the tokens of the range,
    or the negation of the tokens of the bands outside it when those hold fewer documents.
    The GIN scan reads the posting lists of every token either way; for the bands 0..510
    (a quarter of the bench's documents are in band 511), 21 tokens took 2-3 ms and
    ``!r:511`` 0.8 ms, while ``!rc:7`` next to a common word took 7 ms."""
    if first == 0 and last >= _LAST_BAND:
        return ""
    inside = range_tokens(first, last)
    if cumulative:
        total = cumulative[-1][1]
        held = _through(cumulative, last) - _through(cumulative, first - 1)
        if total - held < held:
            outside = range_tokens(0, first - 1) + range_tokens(last + 1, _LAST_BAND)
            return f" & !{tsquery_tokens(outside, any_of=True)}"
    return f" & {tsquery_tokens(inside, any_of=True)}"


def _through(cumulative: list[tuple[int, int]], band: int) -> int:
    """About how many documents are in bands 0..band (from the histogram's entries)."""
    i = bisect.bisect_right(cumulative, (band, 1 << 62))
    return cumulative[i - 1][1] if i else 0


def body_repeats_summary(doc: dict[str, Any]) -> bool:
    """Whether the indexed body starts with the whole indexed summary, token for token (a
    hub repository's summary is the first line of its description): then ``tsv`` indexes
    the summary once, as the start of the body. Every word, prefix and phrase the summary
    holds is at the body's start in the same order, and phrases never span two fields, so
    ``tsv`` matches what it matched with both. (PostgreSQL keeps 256 positions per lexeme,
    the first in field order: the summary's occurrences of a word are replaced by as many
    at the body's start, and only a word of more than 256 occurrences keeps more of its
    later ones, as SQLite, which keeps them all, does.)"""
    summary, body = doc["fts_summary"], doc["fts_body"]
    return body.startswith(summary) and (len(body) == len(summary) or body[len(summary)] == " ")


_ANYWHERE = (_NAME, _TITLE, _SUMMARY, _BODY)
_ANYWHERE_ONCE = (_NAME, _TITLE, _BODY)

NO_COMMON: frozenset[str] = frozenset()


def grams(
    doc: dict[str, Any], fields: Sequence[tuple[str, str, int]], common: Collection[str]
) -> list[str]:
    """The common grams of a document's fields (query.GRAM_MARK), without positions: for
    every position p holding a word of ``common`` and p + 1 holding a word of ``common`` or
    a word whose 3-character prefix lexeme is in ``common``, the pair. Positions are taken
    as the tsvector places the words (a field's start plus the word's offset, 16383 at
    most), every occurrence: a superset of the pairs the stored positions (256 per lexeme
    at most) make adjacent, so a document a phrase ``'a' <-> 'b'`` matches always holds its
    gram, and a query asking for both finds exactly what the phrase alone finds."""
    if not common:
        return []
    n = SHORT_PREFIXES[0]
    firsts: dict[int, list[str]] = {}
    seconds: dict[int, list[str]] = {}
    for column, _weight, start in fields:
        for offset, tok in enumerate(doc[column].split(), start):
            at = offset if offset < _MAX_POS else _MAX_POS
            if tok in common:
                firsts.setdefault(at, []).append(tok)
                seconds.setdefault(at, []).append(tok)
            if len(tok) >= n and (prefix := PREFIX_MARK + tok[:n]) in common:
                seconds.setdefault(at, []).append(prefix)
    found = {
        gram(first, second)
        for at, words in firsts.items()
        for second in seconds.get(at + 1, ())
        for first in words
    }
    return sorted(found)


def tsvector_literals(doc: dict[str, Any], common: Collection[str] = NO_COMMON) -> dict[str, str]:
    """The document's tsvectors as text literals; ``tsv`` holds the grams of ``common``
    (the index's vocabulary of common words, :func:`common_words`)."""
    band = "".join(" " + _quote(t) for t in band_tokens(doc["id"]))
    anywhere = _ANYWHERE_ONCE if body_repeats_summary(doc) else _ANYWHERE
    pairs = "".join(" " + _quote(g) for g in grams(doc, anywhere, common))
    return {
        "tags": " ".join(_quote(t) for t in doc["fts_facets"].split()),
        "head": _literal(doc, (_NAME, _TITLE), True) + band,
        "mid": _literal(doc, (_NAME, _TITLE, _SUMMARY), False) + band,
        "tsv": _literal(doc, anywhere, False) + pairs + band,
    }


# --- the same tsvectors in PostgreSQL's binary form, for a full rebuild's COPY -------------
#
# The server parses a text literal character by character, then sorts and deduplicates its
# lexemes and positions: two thirds of the COPY's time, in the one backend process a worker
# cannot relieve. Binary input (tsvectorrecv) only checks it: a lexeme, NUL, the number of
# its positions and each as 16 bits (weight in the top two, A = 3), positions strictly
# increasing and lexemes unique (the server sorts them if they are not in order).

_WEIGHT_BITS = {"A": 3 << 14, "B": 2 << 14, "C": 1 << 14, "D": 0}
_MAX_POSITIONS = 256
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + bytes(8)  # signature, flags, header extension
COPY_TRAILER = b"\xff\xff"
_INT32 = struct.Struct("!i")
_ID_FIELD = struct.Struct("!hiq")  # the row's field count, then the id: length 8, int8


@lru_cache(maxsize=1 << 18)
def _wire_lexemes(token: str) -> tuple[bytes, bytes | None]:
    """:func:`_lexemes` as the binary form's NUL-terminated strings."""
    n = SHORT_PREFIXES[0]
    prefix = (PREFIX_MARK + token[:n]).encode() + b"\0" if len(token) >= n else None
    return token.encode() + b"\0", prefix


# One position (most lexemes): its count and itself, for every weight.
_ONE_POSITION = [struct.pack("!HH", 1, p) for p in range(1 << 16)]


@lru_cache(maxsize=_MAX_POSITIONS + 1)
def _counted(n: int) -> struct.Struct:
    return struct.Struct(f"!{n + 1}H")  # the number of positions, then each


def _position_bits(position: int) -> int:
    return position & 0x3FFF


def _unique_positions(held: list[int]) -> list[int]:
    """What the server's parser makes of a text literal's positions (uniquePos): sorted,
    one per position (the highest weight given), at most 256, none after 16383."""
    ordered = sorted(held, key=_position_bits)
    out = ordered[:1]
    for p in ordered[1:]:
        if p & 0x3FFF != out[-1] & 0x3FFF:
            out.append(p)
            if len(out) >= _MAX_POSITIONS or p & 0x3FFF == _MAX_POS:
                break
        elif p > out[-1]:
            out[-1] = p
    return out


def _wire(
    doc: dict[str, Any],
    fields: Sequence[tuple[str, str, int]],
    weighted: bool,
    plain: Sequence[str],
) -> bytes:
    """The tsvector ``_literal(doc, fields, weighted)`` followed by the ``plain`` lexemes
    (grams, band tokens: no positions) is read as, in binary form, with its length in front
    (a COPY field)."""
    positions: dict[str, list[int]] = {}
    head: dict[bytes, list[int]] = {}  # the 2-character prefixes of name and title words
    get = positions.get
    ordered, last = True, 0
    for column, weight, start in fields:
        tokens = doc[column].split()
        if not tokens:
            continue
        end = start + len(tokens) - 1
        if start <= last or end > _MAX_POS:
            ordered = False  # fields overlapping or positions clamped: the server's order
        last = end
        w = _WEIGHT_BITS[weight] if weighted else 0
        offsets: Sequence[int] = (
            range(start + w, end + 1 + w)
            if end <= _MAX_POS
            else [min(o, _MAX_POS) + w for o in range(start, end + 1)]
        )
        in_head = start < _SUMMARY[2]
        for position, tok in zip(offsets, tokens, strict=True):
            if in_head and len(tok) >= HEAD_PREFIX:
                named = head.setdefault((PREFIX_MARK + tok[:HEAD_PREFIX]).encode() + b"\0", [])
                if len(named) < _MAX_POSITIONS:
                    named.append(position)
            held = get(tok)
            if held is None:
                positions[tok] = [position]
            elif len(held) < _MAX_POSITIONS:
                held.append(position)
    # Lexemes and their positions as _literal writes them (positions in the order the
    # server's parser puts them when they are not in order already).
    entries = []
    prefixes: dict[bytes, list[int]] = {}
    one = _ONE_POSITION
    for tok, held in positions.items():
        lexeme, prefix = _wire_lexemes(tok)
        if prefix is not None:
            shared = prefixes.get(prefix)
            if shared is None:
                prefixes[prefix] = held
            else:
                merged = sorted(shared + held, key=_position_bits)
                prefixes[prefix] = merged[:_MAX_POSITIONS]
        if not ordered:
            held = _unique_positions(held)
        n = len(held)
        entries.append(lexeme + (one[held[0]] if n == 1 else _counted(n).pack(n, *held)))
    for lexeme, held in [*prefixes.items(), *head.items()]:
        if not ordered:
            held = _unique_positions(held)
        n = len(held)
        entries.append(lexeme + (one[held[0]] if n == 1 else _counted(n).pack(n, *held)))
    for token in dict.fromkeys([*doc["fts_facets"].split(), *plain]):
        lexeme = token.encode() + b"\0"
        if token not in positions and lexeme not in prefixes and lexeme not in head:
            entries.append(lexeme + b"\0\0")
    # In the server's order (a lexeme's bytes, a shorter one first): laid out as the text
    # parser lays it out, byte for byte, and not sorted again.
    entries.sort()
    data = b"".join(entries)
    return _INT32.pack(len(data) + 4) + _INT32.pack(len(entries)) + data


def _wire_plain(tokens: Sequence[str]) -> bytes:
    entries = sorted({t.encode() + b"\0\0\0" for t in tokens})
    data = b"".join(entries)
    return _INT32.pack(len(data) + 4) + _INT32.pack(len(entries)) + data


def tsvector_rows(doc: dict[str, Any], common: Collection[str] = NO_COMMON) -> tuple[bytes, bytes]:
    """The document's rows of search_fts_terms (id, tags, tsv) and search_fts_fields (id,
    head, mid) in COPY's binary format: the tsvectors of :func:`tsvector_literals`."""
    bands = band_tokens(doc["id"])
    anywhere = _ANYWHERE_ONCE if body_repeats_summary(doc) else _ANYWHERE
    key = _ID_FIELD.pack(3, 8, doc["id"])
    plain = [*grams(doc, anywhere, common), *bands]
    return (
        key + _wire_plain(doc["fts_facets"].split()) + _wire(doc, anywhere, False, plain),
        key
        + _wire(doc, (_NAME, _TITLE), True, bands)
        + _wire(doc, (_NAME, _TITLE, _SUMMARY), False, bands),
    )


# --- the vocabulary: every word lexeme and 3-character prefix lexeme of the index -----------
#
# A prefix in a tsquery ('fakvd':*) is a partial match: the GIN index collects the posting
# lists of every lexeme it starts into a bitmap of heap pages before anything else, so the
# band and filter tokens cannot narrow it, and a word in 10 % of the documents cost about
# 3 ms in each statement of a search (four of them: facet pass and three tiers). Asked for as
# the lexemes it starts ('fakvd' | 'fakvdx'), the scan skips through the posting lists
# like any word's. search_fts_vocabulary lists every lexeme the prefix can start (words and
# '*:abc' prefix lexemes, never facet or band tokens: ':' is not part of a word); it only
# grows (a lexeme no document holds any more matches nothing), and a lexeme is committed
# before the document holding it is: written from a connection of its own, one statement in
# lexeme order (it never waits for a long transaction, and two of them never deadlock).
_EXPAND_AT_MOST = 32  # a prefix starting more lexemes stays a partial match
_EXPAND = text(
    "SELECT k, lexeme FROM unnest(CAST(:keys AS text[])) AS k, LATERAL ("
    'SELECT lexeme FROM search_fts_vocabulary WHERE lexeme >= k COLLATE "C" '
    'AND lexeme < (k || chr(1114111)) COLLATE "C" ORDER BY lexeme LIMIT :n) AS v'
)
_MISSING_WORDS = text(
    "SELECT w FROM unnest(CAST(:words AS text[])) AS w WHERE NOT EXISTS "
    '(SELECT FROM search_fts_vocabulary AS v WHERE v.lexeme = w COLLATE "C")'
)
_ADD_WORDS = text(
    "INSERT INTO search_fts_vocabulary (lexeme) SELECT w FROM unnest(CAST(:words AS text[])) "
    'AS w ORDER BY w COLLATE "C" ON CONFLICT DO NOTHING'
)
_TEXT_COLUMNS = ("fts_name", "fts_title", "fts_summary", "fts_body")
_vocabulary_engines: dict[str, Engine] = {}


def vocabulary(docs: Sequence[Any]) -> set[str]:
    """The lexemes of the documents' tsvectors a prefix can start: their words and the
    words' 3-character prefix lexemes."""
    words: set[str] = set()
    for doc in docs:
        for column in _TEXT_COLUMNS:
            words.update(doc[column].split())
    n = SHORT_PREFIXES[0]
    words.update([PREFIX_MARK + w[:n] for w in words if len(w) >= n])
    return words


def add_vocabulary(conn: Connection, docs: Sequence[Any]) -> None:
    """Commit the lexemes of ``docs`` missing from the vocabulary, before the caller's
    transaction (which writes the documents) commits."""
    _add_words(conn, vocabulary(docs))


def _add_words(conn: Connection, words: set[str]) -> None:
    if not words:
        return
    missing = conn.scalars(_MISSING_WORDS, {"words": sorted(words)}).all()
    if not missing:
        return
    key = conn.engine.url.render_as_string(hide_password=False)
    engine = _vocabulary_engines.get(key)
    if engine is None:
        # No pool: a writer holding the pool's last connection never waits for another.
        engine = _vocabulary_engines.setdefault(key, create_engine(key, poolclass=NullPool))
    with engine.begin() as own:
        own.execute(_ADD_WORDS, {"words": missing})


# --- common words: the vocabulary of the grams (query.GRAM_MARK) ------------------------------
#
# search_fts_common lists the words and 3-character prefix lexemes in at least
# _COMMON_SHARE of the documents (estimated from a sample) when a full rebuild ran: every
# tsv holds the grams of its pairs of them (:func:`grams`), and a phrase is asked for with
# the grams of its pairs that are listed. It only grows: a rebuild adds the lexemes that have
# become common and removes none, all in its transaction (committed with the swapped
# tables), and writers read it in the transaction that writes a document (after writing
# search_documents, which waits for a rebuild's catch-up to commit). So the grams a search
# asks for are in every document of the index it reads, even when it read the list before a
# rebuild committed; a word that becomes common after the last rebuild is not listed, and its
# phrases are checked as before until the next one lists it. A word no longer common keeps
# its grams, which cost little: they are only where the word is.
_COMMON_SHARE = 0.05
_COMMON_LEAST = 20_000  # documents: a smaller index has no phrase costly enough to need grams
_COMMON_SAMPLE = 20_000  # documents read to estimate the shares
_COMMON_MOST = 256
_COMMON_OF = text("SELECT lexeme FROM search_fts_common WHERE lexeme = ANY(:lexemes)")


def common_words(conn: Connection) -> frozenset[str]:
    """The vocabulary of common words the index is built with."""
    return frozenset(conn.scalars(text("SELECT lexeme FROM search_fts_common")))


def grow_common(conn: Connection) -> frozenset[str]:
    """The vocabulary of common words with the words and prefix lexemes of at least
    _COMMON_SHARE of a sample of the documents added (in the caller's transaction, in order
    of share, up to _COMMON_MOST in all)."""
    held = common_words(conn)
    total = conn.scalar(text("SELECT count(*) FROM search_documents")) or 0
    if total < _COMMON_LEAST or len(held) >= _COMMON_MOST:
        return held
    percent = min(100.0, 100.0 * _COMMON_SAMPLE / total)
    counts: Counter[str] = Counter()
    sampled = 0
    n = SHORT_PREFIXES[0]
    for row in conn.execute(
        text(
            "SELECT fts_name, fts_title, fts_summary, fts_body FROM search_documents "  # noqa: S608
            f"TABLESAMPLE BERNOULLI ({percent:.6f}) REPEATABLE (0)"
        )
    ):
        words = set(" ".join(row).split())
        counts.update(words)
        counts.update({PREFIX_MARK + w[:n] for w in words if len(w) >= n})
        sampled += 1
    floor = max(1.0, _COMMON_SHARE * sampled)
    added = [w for w, c in counts.most_common() if c >= floor and w not in held]
    added = sorted(added[: _COMMON_MOST - len(held)])
    if added:
        conn.execute(
            text(
                "INSERT INTO search_fts_common (lexeme) SELECT unnest(CAST(:w AS text[])) "
                "ON CONFLICT DO NOTHING"
            ),
            {"w": added},
        )
    return held | frozenset(added)


def expansions(conn: Connection, criteria: Criteria) -> dict[str, list[str]]:
    """Each prefix of the query (tsquery_prefix_key) → the lexemes it starts, for prefixes
    starting at least one and at most _EXPAND_AT_MOST of them."""
    query = criteria.query
    keys = {
        key
        for p in [*(p for group in query.groups for p in group), *query.excluded]
        if p.prefix and (key := tsquery_prefix_key(p.tokens[-1]))
    }
    if not keys:
        return {}
    found: dict[str, list[str]] = {}
    for key, lexeme in conn.execute(_EXPAND, {"keys": sorted(keys), "n": _EXPAND_AT_MOST + 1}):
        found.setdefault(key, []).append(lexeme)
    return {k: v for k, v in found.items() if len(v) <= _EXPAND_AT_MOST}


def tsquery(
    criteria: Criteria,
    weights: str = "",
    *,
    excluded: bool = True,
    expansions: Expansions | None = None,
    common: Collection[str] | None = None,
) -> str:
    parts = []
    words = tsquery_text(
        criteria.query, weights, excluded=excluded, expansions=expansions, common=common
    )
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
        if scope.tokens:
            mine = tsquery_tokens(scope.tokens, any_of=True)
            restricted = f"({restricted} & !{mine})"
        parts.append(f"!{restricted}")
    return " & ".join(parts)


# Tier → the tsvector column holding exactly the tier's fields, and the weights needed.
_TIER_COLUMN = {3: ("head", TIER_WEIGHTS[3]), 2: ("head", ""), 1: ("mid", "")}
# Facet tokens as plain text, "k:image s:hub ..." (they hold no quote or space).
_FACET_SQL = "SELECT id, array_to_string(tsvector_to_array(tags), ' ') FROM search_fts_terms "

_FIRST_STEP = 16  # no statistics: the first band range covers this many documents per row
_MARGIN = 1.25  # band ranges cover this many times the documents the density says are needed
_FEW_ROWS = 300  # expected matches in all at most this many: no bands
_STATS_TTL = 300.0
_SAMPLED_ROWS = 40_000  # from this many rows on, bands are counted from ANALYZE's histogram


@dataclass(frozen=True)
class _Shares:
    """ANALYZE's most common elements of a tsvector column: lexeme → share of documents
    holding it, and the share below which a lexeme is not listed."""

    lexemes: list[str]  # sorted
    running: list[float]  # running[i]: sum of the shares of lexemes[:i]
    floor: float

    @classmethod
    def of(cls, elements: list[str], freqs: list[float]) -> _Shares:
        pairs = sorted(zip(elements, freqs, strict=False))
        running = [0.0]
        for _lexeme, share in pairs:
            running.append(running[-1] + share)
        return cls([p[0] for p in pairs], running, freqs[len(elements)])

    def of_lexeme(self, lexeme: str) -> float:
        i = bisect.bisect_left(self.lexemes, lexeme)
        if i < len(self.lexemes) and self.lexemes[i] == lexeme:
            return self.running[i + 1] - self.running[i]
        return self.floor  # not listed: less common than the least listed

    def of_prefix(self, prefix: str) -> float:
        """The listed lexemes it starts, and maybe unlisted ones."""
        lo = bisect.bisect_left(self.lexemes, prefix)
        hi = bisect.bisect_left(self.lexemes, prefix + "\U0010ffff")
        return self.running[hi] - self.running[lo] + self.floor


@dataclass(frozen=True)
class _Stats:
    """What the band ranges are chosen from; only the speed of a search depends on it being
    accurate or current (ranges are contiguous and disjoint, whatever they cover)."""

    # (band, about how many documents are in it and better bands), best band first.
    cumulative: list[tuple[int, int]]
    shares: dict[str, _Shares]  # by tsvector column

    def density(
        self, column: str, criteria: Criteria, common: Collection[str] = NO_COMMON
    ) -> float | None:
        """About which share of the documents match (None without statistics), erring on
        the high side: too high costs one more round trip, too low a band range holding
        many more matches than needed. Each required word or filter has a share (an
        unlisted word: the least listed share, an upper bound); they combine as the
        geometric mean of the least of them (all always together) and their product (all
        independent)."""
        shares = self.shares.get(column)
        if shares is None:
            return None

        def phrase(p: Phrase) -> float:
            values = [shares.of_lexeme(t) for t in p.tokens[:-1]]
            last = p.tokens[-1]
            if p.prefix and len(last) == SHORT_PREFIXES[0]:
                values.append(shares.of_lexeme(PREFIX_MARK + last))
            elif p.prefix and short_prefix(last):
                # The word itself or the 2-character prefix of words of names and titles.
                values.append(
                    min(1.0, shares.of_lexeme(last) + shares.of_lexeme(PREFIX_MARK + last))
                )
            elif p.prefix:
                values.append(shares.of_prefix(last))
            else:
                values.append(shares.of_lexeme(last))
            # The phrase's grams (``common``: asked for in this column).
            values += [
                shares.of_lexeme(gram(a, b))
                for a, b in gram_pairs(p)
                if a in common and b in common
            ]
            return min(values)

        required = [min(1.0, sum(phrase(p) for p in group)) for group in criteria.query.groups]
        required += [shares.of_lexeme(token) for token in criteria.filter_tokens]
        if not required:
            return 1.0
        # Between the least share (words that always go together) and the product (words
        # independent of each other): never below the truth by more than the square root
        # of the product of the other shares.
        product = math.prod(required)
        return math.sqrt(min(required) * product)


_stats_cache: dict[str, tuple[float, _Stats]] = {}


def _stats(conn: Connection) -> _Stats:
    """Band histogram and lexeme shares, cached for a few minutes per database: ANALYZE's
    statistics (autovacuum keeps them current) for a large index, exact band counts for a
    small one (cheap, and a fresh table has no statistics yet)."""
    key = conn.engine.url.render_as_string(hide_password=True)
    now = time.monotonic()
    cached = _stats_cache.get(key)
    if cached is not None and now - cached[0] < _STATS_TTL:
        return cached[1]
    rows = conn.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'search_fts_terms'"))
    listed = conn.execute(
        text(
            "SELECT attname, CASE WHEN attname = 'id' "
            "THEN CAST(CAST(histogram_bounds AS text) AS bigint[]) END, "
            "CAST(CAST(most_common_elems AS text) AS text[]), most_common_elem_freqs "
            "FROM pg_stats WHERE schemaname = current_schema() "
            "AND (tablename = 'search_fts_terms' AND attname IN ('id', 'tsv') "
            "OR tablename = 'search_fts_fields' AND attname IN ('head', 'mid'))"
        )
    ).all()
    shares: dict[str, _Shares] = {}
    bounds: list[int] = []
    for column, histogram, elements, freqs in listed:
        if histogram:
            bounds = histogram
        if elements and freqs:
            shares[column] = _Shares.of(elements, freqs)
    cumulative: list[tuple[int, int]] = []
    if rows and rows >= _SAMPLED_ROWS and len(bounds) > 1:
        # Equal-count buckets: at most i/k of the documents have a key below bounds[i].
        k = len(bounds) - 1
        for i, bound in enumerate(bounds[1:], 1):
            band = bound >> _BAND_SHIFT
            if cumulative and cumulative[-1][0] == band:
                cumulative.pop()
            cumulative.append((band, round(rows * i / k)))
    else:
        total = 0
        for band, n in conn.execute(
            text(
                f"SELECT id >> {_BAND_SHIFT} AS band, count(*) FROM search_fts_terms "  # noqa: S608
                "GROUP BY band ORDER BY band"
            )
        ):
            total += n
            cumulative.append((int(band), total))
    stats = _Stats(cumulative, shares)
    _stats_cache[key] = (now, stats)
    return stats


@dataclass
class _Part:
    """One ranked query of a banded search: ``sql`` filters on ``@@ :q_`` (its other
    parameters end in ``_`` too) and selects the key first."""

    sql: str
    q: str
    params: dict[str, Any]
    limit: int
    density: float | None
    rows: list[Any] = field(default_factory=list)
    first: int = 0  # the next band to ask for
    index: int = 0  # where the histogram was left
    target: float = 0.0  # documents the next range should cover, counted from band 0
    done: bool = False


# Session settings for the statements of one search (see PostgresBackend.planning).
_PLAN_SETTINGS = {"enable_seqscan": "off", "jit": "off", "plan_cache_mode": "force_custom_plan"}
_PLAN_ENTER = text(
    "SELECT "
    + ", ".join(f"current_setting('{name}')" for name in _PLAN_SETTINGS)
    + ", "
    + ", ".join(f"set_config('{name}', '{value}', true)" for name, value in _PLAN_SETTINGS.items())
)
_PLAN_RESTORE = text(
    "SELECT " + ", ".join(f"set_config('{n}', :v{i}, true)" for i, n in enumerate(_PLAN_SETTINGS))
)


_WRITE_TERMS = text(
    "INSERT INTO search_fts_terms (id, tags, tsv) VALUES "
    "(:id, CAST(:tags AS tsvector), CAST(:tsv AS tsvector)) "
    "ON CONFLICT (id) DO UPDATE SET tags = excluded.tags, tsv = excluded.tsv"
)
_WRITE_FIELDS = text(
    "INSERT INTO search_fts_fields (id, head, mid) VALUES "
    "(:id, CAST(:head AS tsvector), CAST(:mid AS tsvector)) "
    "ON CONFLICT (id) DO UPDATE SET head = excluded.head, mid = excluded.mid"
)


_READ_INDEXED = text(
    "SELECT id, fts_name, fts_title, fts_summary, fts_body, fts_facets FROM search_documents "
    "WHERE id = ANY(:ids)"
)


class PostgresBackend:
    """One instance per search (see backend_for): it remembers what the facet pass saw."""

    name = "postgresql-tsvector"
    _complete = False
    _matches: list[int] | None = None  # every match's key, when the facet pass saw them all
    _prefixes: dict[str, list[str]] | None = None
    _grams: frozenset[str] | None = None
    # Tiers of a search whose facet pass saw every match: from those rows (see tier_ids).
    tiers_from_matches = True

    def _common(self, conn: Connection, criteria: Criteria) -> frozenset[str]:
        """The words and prefix lexemes of the query's phrases that are in the vocabulary
        of common words (grams: asked for in ``tsv``), looked up once, and only for a query
        with a phrase."""
        if self._grams is None:
            wanted = {
                x for group in criteria.query.groups for p in group for x in chain(*gram_pairs(p))
            }
            self._grams = (
                frozenset(conn.scalars(_COMMON_OF, {"lexemes": sorted(wanted)}))
                if wanted
                else NO_COMMON
            )
        return self._grams

    def _expansions(self, conn: Connection, criteria: Criteria) -> dict[str, list[str]]:
        """The query's prefixes as lexemes (see :func:`expansions`), looked up once."""
        if self._prefixes is None:
            self._prefixes = expansions(conn, criteria)
        return self._prefixes

    @contextmanager
    def planning(self, conn: Connection) -> Iterator[None]:
        """For one search: no sequential scans (a word query is a GIN bitmap scan whatever
        the estimate), no JIT (the disabled-plan costs would trigger it), and a plan made
        for each statement's own tsquery: the driver prepares statements it runs often, and
        a generic plan, made without the tsquery, may walk the rank-key index for a rare
        combination of filters. Restored after."""
        current = conn.execute(_PLAN_ENTER).one()[: len(_PLAN_SETTINGS)]
        try:
            yield
        finally:
            conn.execute(_PLAN_RESTORE, {f"v{i}": value for i, value in enumerate(current)})

    def tier_ids(self, conn: Connection, criteria: Criteria, limit: int) -> dict[int, list[int]]:
        # head/mid lack the description: exclusions are checked against tsv.
        prefixes = self._expansions(conn, criteria)
        if self._matches is not None and self.tiers_from_matches:
            return self._tiers_of(conn, criteria, prefixes, self._matches, limit)
        excluded = tsquery_excluded(criteria.query, prefixes)
        stats = None if self._complete else _stats(conn)
        parts = []
        for column, weights in _TIER_COLUMN.values():
            sql = f"SELECT id FROM search_fts_fields AS f WHERE {column} @@ CAST(:q_ AS tsquery)"  # noqa: S608
            params = {}
            if excluded:
                sql += (
                    " AND NOT EXISTS (SELECT FROM search_fts_terms AS t "
                    "WHERE t.id = f.id AND t.tsv @@ CAST(:x_ AS tsquery))"
                )
                params["x_"] = excluded
            q = tsquery(criteria, weights, excluded=False, expansions=prefixes)
            density = stats.density(column, criteria) if stats else None
            parts.append(_Part(sql, q, params, limit, density))
        # Tier matches are a subset of the facet pass's matches: when that pass saw all of
        # them (fewer than it asked for), one unbanded query each visits at most that many.
        self._banded(conn, parts, stats)
        return {
            tier: [r[0] for r in part.rows] for tier, part in zip(_TIER_COLUMN, parts, strict=True)
        }

    def _tiers_of(
        self,
        conn: Connection,
        criteria: Criteria,
        prefixes: Expansions,
        keys: list[int],
        limit: int,
    ) -> dict[int, list[int]]:
        """The tiers' first ``limit`` matches when the facet pass saw every match (fewer
        than it asked for): a tier's matches are among them (its fields and filters are a
        part of the document's, and the facet pass checked the exclusions), so each of
        those rows is looked up by its key and its tier queries evaluated on it: one
        statement visiting at most that many rows of search_fts_fields, where a tier query
        of its own is a GIN scan whose candidates are rechecked row by row (a phrase of two
        common words: every document holding both words in the tier's fields)."""
        if not keys:
            return {tier: [] for tier in _TIER_COLUMN}
        checks = ", ".join(
            f"{column} @@ CAST(:q{tier} AS tsquery)" for tier, (column, _) in _TIER_COLUMN.items()
        )
        params: dict[str, Any] = {
            f"q{tier}": tsquery(criteria, weights, excluded=False, expansions=prefixes)
            for tier, (_, weights) in _TIER_COLUMN.items()
        }
        params["ids"] = keys
        rows = sorted(
            conn.execute(
                text(f"SELECT id, {checks} FROM search_fts_fields WHERE id = ANY(:ids)"),  # noqa: S608
                params,
            )
        )
        return {
            tier: [r[0] for r in rows if r[i]][:limit] for i, tier in enumerate(_TIER_COLUMN, 1)
        }

    def facet_rows(
        self, conn: Connection, criteria: Criteria, limit: int
    ) -> Sequence[tuple[int, str]]:
        if criteria.query.empty:
            # Only tags: small and inline, so walking the rank-key index (few filters) or a
            # GIN bitmap (rare filter values) are both cheap; the planner's estimates of
            # whole-token frequencies are good.
            rows = conn.execute(
                text(_FACET_SQL + "WHERE tags @@ CAST(:q AS tsquery) ORDER BY id LIMIT :n"),
                {"q": tsquery(criteria), "n": limit},
            ).all()
        else:
            stats = _stats(conn)
            common = self._common(conn, criteria)
            part = _Part(
                _FACET_SQL + "WHERE tsv @@ CAST(:q_ AS tsquery)",
                tsquery(criteria, expansions=self._expansions(conn, criteria), common=common),
                {},
                limit,
                stats.density("tsv", criteria, common),
            )
            self._banded(conn, [part], stats)
            rows = part.rows
            self._complete = len(rows) < limit
            self._matches = [r[0] for r in rows] if self._complete else None
        return [(r[0], r[1]) for r in rows]

    def _banded(self, conn: Connection, parts: list[_Part], stats: _Stats | None) -> None:
        """The first ``limit`` rows of each part in rank order, all parts asked in one
        statement per round (``stats`` None: one unbanded round).

        Each part asks for its matches in the best rank bands first: bands 0..k covering
        about as many documents as its expected density says hold ``limit`` matches (with
        a margin; 16 times ``limit`` without statistics), then the following bands, sized
        by the density seen, until ``limit`` rows are found or every band was asked. The
        ranges are contiguous and disjoint in band numbers, so the concatenated rows are
        in rank order whatever the histogram says."""
        cumulative = stats.cumulative if stats else []
        total = cumulative[-1][1] if cumulative else 0
        for part in parts:
            if part.density is None:
                part.target = _FIRST_STEP * part.limit
            elif part.density * total <= max(part.limit * _MARGIN, _FEW_ROWS):
                part.target = total + 1  # few matches in all: fetch them in one go
            else:
                part.target = part.limit / part.density * _MARGIN
        while True:
            active = [p for p in parts if not p.done]
            if not active:
                return
            branches, params, ranges = [], {}, []
            for i, part in enumerate(active):
                while part.index < len(cumulative) and cumulative[part.index][1] < part.target:
                    part.index += 1
                last = cumulative[part.index][0] if part.index < len(cumulative) - 1 else _LAST_BAND
                query = part.q + _band_filter(part.first, last, cumulative)
                sql = part.sql.replace(":q_", f":q{i}_").replace(":x_", f":x{i}_")
                branches.append(f"(SELECT {i}, s.* FROM ({sql} ORDER BY id + 0 LIMIT :n{i}_) s)")  # noqa: S608
                params.update({f"{k[:-1]}{i}_": v for k, v in part.params.items()})
                params.update({f"q{i}_": query, f"n{i}_": part.limit - len(part.rows)})
                ranges.append(last)
            found: list[list[Any]] = [[] for _ in active]
            for row in conn.execute(text(" UNION ALL ".join(branches)), params):
                found[row[0]].append(row[1:])
            for part, last, rows in zip(active, ranges, found, strict=True):
                rows.sort(key=itemgetter(0))  # in order already, unless a plan changes
                part.rows += rows
                part.done = len(part.rows) >= part.limit or last >= _LAST_BAND
                # Next: the documents the density seen so far says hold the rows still
                # wanted (with the margin; at least a quarter of what was covered), or
                # straight to "the rest" when that is most of it.
                covered = cumulative[part.index][1] if part.index < len(cumulative) else total
                if part.rows:
                    wanted = (part.limit - len(part.rows)) * covered / len(part.rows) * _MARGIN
                else:
                    wanted = total
                part.target = covered + max(covered / 4, wanted)
                if part.target > total * 0.9:
                    part.target = total + 1
                part.first, part.index = last + 1, part.index + 1

    def after_write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        add_vocabulary(conn, docs)
        self._write(conn, docs)

    def _write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        common = common_words(conn)
        rows = [{"id": d["id"], **tsvector_literals(d, common)} for d in docs]
        conn.execute(_WRITE_TERMS, rows)
        conn.execute(_WRITE_FIELDS, rows)

    def after_move(self, conn: Connection, moves: Sequence[tuple[int, int]]) -> None:
        """The term rows followed their documents' keys (ON UPDATE CASCADE); their
        tsvectors carry the key's rank band (band_tokens), rewritten when it changed."""
        banded = [new for old, new in moves if old >> _BAND_SHIFT != new >> _BAND_SHIFT]
        if banded:
            docs = conn.execute(_READ_INDEXED, {"ids": banded}).mappings().all()
            self._write(conn, [dict(d) for d in docs])

    def begin_bulk(self, conn: Connection) -> None:
        """Many documents are about to be rewritten and rebuild() will follow: nothing to
        maintain row by row (after_write is not called meanwhile)."""

    def rebuild(self, conn: Connection, pool: WorkerPool | None = None) -> None:
        """Both tables built beside the live ones and swapped in (see :func:`rebuild`)."""
        rebuild(conn, pool)


# --- full rebuild: build beside, swap -----------------------------------------------------

_TABLES = {"search_fts_terms": ("tags", "tsv"), "search_fts_fields": ("head", "mid")}
_NEXT = "_next"
_BUILD_MEMORY = "256MB"  # maintenance_work_mem of the GIN builds (this transaction only)
# Documents written by others while the new tables were filled are caught up from their
# indexed_at (written by the application's clock): this much earlier than the start, for
# clocks of other hosts running behind.
_CLOCK_MARGIN_S = 300
_COPY_BATCH = 5000


def rebuild(conn: Connection, pool: WorkerPool | None = None) -> None:
    """search_fts_terms and search_fts_fields rebuilt from search_documents without stopping
    searches: new tables are filled beside the live ones (COPY, in rank-key order, so rows
    of similar rank share pages), their GIN indexes built once and analysed, and they take
    the live tables' place at the end in one step.

    Searches read the old tables until the caller's transaction commits: the only lock they
    can meet is the swap's (dropping and renaming, milliseconds, then the commit). Writers
    of search documents are held from the catch-up on (``SHARE`` on search_documents, which
    searches never conflict with): documents other transactions wrote while the new tables
    were filled are written into them again and the documents they deleted are removed, so
    nothing committed meanwhile is lost. Runs in the caller's transaction (READ COMMITTED:
    the catch-up sees what others committed)."""
    # What the fill below cannot have seen: transactions not visible in this snapshot.
    started, snapshot = conn.execute(
        text("SELECT statement_timestamp(), CAST(pg_current_snapshot() AS text)")
    ).one()
    indexes = conn.execute(_INDEX_DDL).all()
    common = grow_common(conn)
    conn.execute(text(f"SET LOCAL maintenance_work_mem = '{_BUILD_MEMORY}'"))
    for table, columns in _TABLES.items():
        new = table + _NEXT
        conn.execute(text(f"DROP TABLE IF EXISTS {new}"))
        definitions = ", ".join(f"{c} tsvector NOT NULL" for c in columns)
        conn.execute(text(f"CREATE TABLE {new} (id bigint NOT NULL, {definitions})"))
        for statement in _shape(conn, table, new):
            conn.execute(text(statement))
    _copy_documents(conn, None, pool=pool, common=common)
    for table in _TABLES:
        conn.execute(text(f"ALTER TABLE {table + _NEXT} ADD PRIMARY KEY (id)"))
    for index in indexes:
        # CREATE INDEX ix_… ON [schema.]search_fts_… USING gin (…) WITH (…)
        head, on, rest = index.indexdef.partition(" ON ")
        table, using, rest = rest.partition(" USING ")
        conn.execute(text(f"{head}{_NEXT}{on}{table}{_NEXT}{using}{rest}"))
    for table in _TABLES:
        conn.execute(text(f"ANALYZE {table + _NEXT}"))
    _catch_up(conn, started, snapshot, common)
    # Swap: the live tables' order as searches take them (terms, then fields).
    conn.execute(text(f"LOCK TABLE {', '.join(_TABLES)} IN ACCESS EXCLUSIVE MODE"))
    for table in _TABLES:
        conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text(f"ALTER TABLE {table + _NEXT} RENAME TO {table}"))
        conn.execute(
            text(f"ALTER TABLE {table} RENAME CONSTRAINT {table + _NEXT}_pkey TO {table}_pkey")
        )
        # Every row has its document (caught up under the lock above): not checked again.
        conn.execute(
            text(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_id_fkey FOREIGN KEY (id) "
                "REFERENCES search_documents (id) ON DELETE CASCADE ON UPDATE CASCADE NOT VALID"
            )
        )
    for index in indexes:
        conn.execute(text(f"ALTER INDEX {index.indexname}{_NEXT} RENAME TO {index.indexname}"))
    _stats_cache.clear()


def _shape(conn: Connection, table: str, new: str) -> list[str]:
    """ALTER TABLE statements giving ``new`` the storage settings the migrations gave
    ``table``: table options (toast_tuple_target), and per column the statistics target,
    storage and compression."""
    statements = []
    options = conn.scalar(
        text("SELECT array_to_string(reloptions, ', ') FROM pg_class WHERE oid = to_regclass(:t)"),
        {"t": table},
    )
    if options:
        statements.append(f"ALTER TABLE {new} SET ({options})")
    storage = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
    compression = {"p": "pglz", "l": "lz4"}
    for column, target, kind, method in conn.execute(
        text(
            "SELECT attname, attstattarget, attstorage, attcompression FROM pg_attribute "
            "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped"
        ),
        {"t": table},
    ):
        if target and target > 0:
            statements.append(f"ALTER TABLE {new} ALTER COLUMN {column} SET STATISTICS {target}")
        if column != "id":
            statements.append(
                f"ALTER TABLE {new} ALTER COLUMN {column} SET STORAGE {storage[kind]}"
            )
        if method in compression:
            statements.append(
                f"ALTER TABLE {new} ALTER COLUMN {column} SET COMPRESSION {compression[method]}"
            )
    return statements


def _catch_up(
    conn: Connection, started: Any, snapshot: str, common: frozenset[str] = NO_COMMON
) -> None:
    """From here no other transaction writes search documents until this one ends: what
    they committed while the new tables were filled is written into them again, and rows of
    documents they deleted (or moved to another rank key) are removed."""
    conn.execute(text("LOCK TABLE search_documents IN SHARE MODE"))
    for table in _TABLES:
        conn.execute(
            text(
                f"DELETE FROM {table + _NEXT} AS t WHERE NOT EXISTS "  # noqa: S608
                "(SELECT FROM search_documents AS d WHERE d.id = t.id)"
            )
        )
    _copy_documents(conn, started, snapshot, common=common)


_DOC_COLUMNS = "id, fts_name, fts_title, fts_summary, fts_body, fts_facets"
_DOC_KEYS = tuple(_DOC_COLUMNS.split(", "))


def copy_data(
    docs: Sequence[Sequence[Any]], common: Collection[str] = NO_COMMON
) -> list[tuple[bytes, bytes, set[str]]]:
    """The COPY input (binary format) of these documents' rows of both tables, from their
    ``_DOC_COLUMNS``, with the grams of ``common``: one (search_fts_terms,
    search_fts_fields, vocabulary) triple, the vocabulary being the lexemes a prefix can
    start (:func:`vocabulary`). A module-level function of plain values: a full rebuild
    runs it in worker processes."""
    terms, fields = [], []
    mapped = [dict(zip(_DOC_KEYS, values, strict=True)) for values in docs]
    for doc in mapped:
        term_row, field_row = tsvector_rows(doc, common)
        terms.append(term_row)
        fields.append(field_row)
    return [(b"".join(terms), b"".join(fields), vocabulary(mapped))]


def _copy_documents(
    conn: Connection,
    since: Any,
    snapshot: str = "",
    pool: WorkerPool | None = None,
    common: frozenset[str] = NO_COMMON,
) -> None:
    """Write the tsvectors of the documents into the new tables, in rank-key order, with
    COPY: all of them (``since`` None), or those written (from about ``since`` on) by other
    transactions that ``snapshot`` does not see, replacing their rows. All of them: the
    literals of a batch are built by the ``pool``'s workers (with a share taken back by
    this process) while this process reads the next batch and copies the one before; their
    lexemes are committed to the vocabulary once, at the end (before the swap commits the
    rows holding them): per batch, each commit flushed the WAL of every row copied so far
    and each look-up asked again for the common words of every batch before it."""
    if since is None:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        select_batch = (
            f"SELECT {_DOC_COLUMNS} FROM search_documents "  # noqa: S608
            f"WHERE id > %s ORDER BY id LIMIT {_COPY_BATCH}"
        )
        last = -(1 << 63)
        pending: Spread[tuple[bytes, bytes, set[str]]] | None = None
        words: set[str] = set()
        while True:
            docs = cursor.execute(select_batch, (last,)).fetchall()
            build = partial(copy_data, common=common)
            spread = pool.start(build, docs) if pool is not None and docs else None
            if pending is not None:
                _copy_rows(conn, pending.result(), words)
                pending = None
            if not docs:
                _add_words(conn, words)
                return
            if spread is not None:
                pending = spread
            else:
                _copy_rows(conn, build(docs), words)
            last = docs[-1][0]
    # The 64-bit id of the transaction that wrote each row (xmin holds its low 32 bits; it
    # is not newer than this transaction): rows the snapshot sees were read by the fill,
    # and this transaction's own rows were written by it.
    me = "CAST(CAST(me AS text) AS bigint)"
    writer = f"({me} >> 32 << 32) + CAST(CAST(xmin AS text) AS bigint)"
    writer = f"CASE WHEN {writer} > {me} THEN {writer} - 4294967296 ELSE {writer} END"
    docs = (
        conn.execute(
            text(
                f"SELECT {_DOC_COLUMNS} FROM (SELECT *, CAST(CAST({writer} AS text) AS xid8) "  # noqa: S608
                "AS written_by FROM search_documents, "
                "(SELECT pg_current_xact_id() AS me) AS this WHERE indexed_at >= :since) AS d "
                "WHERE written_by <> me AND NOT pg_visible_in_snapshot(written_by, "
                "CAST(:snapshot AS pg_snapshot)) ORDER BY id"
            ),
            {"since": since - timedelta(seconds=_CLOCK_MARGIN_S), "snapshot": snapshot},
        )
        .mappings()
        .all()
    )
    for start in range(0, len(docs), _COPY_BATCH):
        batch = docs[start : start + _COPY_BATCH]
        ids = [d["id"] for d in batch]
        for table in _TABLES:
            conn.execute(text(f"DELETE FROM {table + _NEXT} WHERE id = ANY(:ids)"), {"ids": ids})  # noqa: S608
        _copy(conn, batch, common)


def _copy(conn: Connection, docs: Sequence[Any], common: frozenset[str]) -> None:
    """The documents' rows copied, their lexemes committed to the vocabulary (before the
    swap commits the rows)."""
    words: set[str] = set()
    _copy_rows(conn, copy_data([[d[k] for k in _DOC_KEYS] for d in docs], common), words)
    _add_words(conn, words)


def _copy_rows(
    conn: Connection, data: Sequence[tuple[bytes, bytes, set[str]]], words: set[str]
) -> None:
    """The documents' rows copied into the new tables, their lexemes added to ``words``."""
    for _, _, held in data:
        words |= held
    terms, fields = (t + _NEXT for t in _TABLES)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {terms} (id, tags, tsv) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_SIGNATURE)
        for chunk, _, _ in data:
            copy.write(chunk)
        copy.write(COPY_TRAILER)
    with cursor.copy(f"COPY {fields} (id, head, mid) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_SIGNATURE)
        for _, chunk, _ in data:
            copy.write(chunk)
        copy.write(COPY_TRAILER)
