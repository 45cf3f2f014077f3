"""“Did you mean”: misspelt words replaced by words of the index's own vocabulary.

The vocabulary is the words of the names, titles and summaries of the documents everyone may
see (never drafts or private repositories), each with the number of documents it is in.
Only words in at least ``floor`` documents are offered (one document per 20,000, at least
one), so a rare typo in someone's summary is never suggested. A word of the query that is
not in the vocabulary is replaced by the vocabulary word nearest to it (edit distance 1
for words of up to four letters, else 2; ties: the word in more documents).

The vocabulary is built in Python and cached per database for five minutes, or until the
number of documents changes; it is only read when a search found nothing. A cached
vocabulary may still hold the words of a document that has since become private (a
repository made private, a product unpublished: the count stays the same), so a suggestion
is only made when every one of its words, whole (not as a prefix), is found in documents
the searcher may see (store.search.service.did_you_mean): nothing of a hidden document is
ever offered.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from store.search import facets
from store.search.models import SearchDocument
from store.search.query import tokenize

TTL_SECONDS = 300.0
DOCS_PER_FLOOR = 20_000
_docs = SearchDocument.__table__.c


@dataclass
class Vocabulary:
    count: int  # documents when built
    built: float  # time.monotonic()
    floor: int
    words: dict[str, int]  # word → documents, at or above the floor
    by_length: dict[int, list[str]]


_cache: dict[str, Vocabulary] = {}
_lock = threading.Lock()


def _build(conn: Connection, count: int) -> Vocabulary:
    frequency: Counter[str] = Counter()
    stmt = select(_docs.name, _docs.title, _docs.summary).where(
        ~_docs.fts_facets.contains(facets.RESTRICTED)
    )
    for name, title, summary in conn.execute(stmt):
        frequency.update(set(tokenize(f"{name} {title} {summary}")))
    floor = max(1, count // DOCS_PER_FLOOR)
    words = {w: n for w, n in frequency.items() if n >= floor and w.isalpha()}
    by_length: dict[int, list[str]] = defaultdict(list)
    for word in words:
        by_length[len(word)].append(word)
    return Vocabulary(count, time.monotonic(), floor, words, dict(by_length))


def vocabulary(conn: Connection) -> Vocabulary:
    key = conn.engine.url.render_as_string(hide_password=True)
    count = int(conn.scalar(select(func.count()).select_from(SearchDocument.__table__)) or 0)
    with _lock:
        cached = _cache.get(key)
    if (
        cached is not None
        and cached.count == count
        and time.monotonic() - cached.built < TTL_SECONDS
    ):
        return cached
    built = _build(conn, count)
    with _lock:
        _cache[key] = built
    return built


def distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of a and b, or limit + 1 once it is known to exceed limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def nearest(vocab: Vocabulary, word: str) -> str | None:
    if word in vocab.words or not word.isalpha() or len(word) < 3:
        return None
    limit = 1 if len(word) <= 4 else 2
    best: tuple[int, int, str] | None = None
    for length in range(len(word) - limit, len(word) + limit + 1):
        for candidate in vocab.by_length.get(length, ()):
            d = distance(word, candidate, limit)
            if d <= limit:
                rank = (d, -vocab.words[candidate], candidate)
                if best is None or rank < best:
                    best = rank
    return best[2] if best else None


def did_you_mean(conn: Connection, q: str) -> str | None:
    """The query with its unknown words replaced by their nearest vocabulary words, or None
    when no word changes."""
    words = tokenize(q)
    if not words or len(words) > 8:
        return None
    vocab = vocabulary(conn)
    changed = False
    out = []
    for word in words:
        better = nearest(vocab, word)
        changed |= better is not None
        out.append(better or word)
    return " ".join(out) if changed else None
