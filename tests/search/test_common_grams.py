"""Phrases of common words (PostgreSQL: common grams) find exactly what they found without
them, on both backends: the matches of many phrase queries, quoted and typed in the search
box, compared with the documents whose indexed fields hold the words adjacent."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from store.search import indexer, service
from store.search.backend import Criteria
from store.search.query import gram, parse
from tests.search.helpers import make_repo

# A few words (most of them in more than 5 % of the documents) and rare ones.
_COMMON = "alpha beta gamma delta omega sigma kappa theta".split()
_RARE = "quokka numbat bilby quoll wombat dingo".split()
_PREFIXED = "betamax betatron gammon deltoid".split()  # share the common words' prefixes


def _corpus(session: Session, n: int = 120, first: int = 0) -> None:
    rng = random.Random(20261205 + first)
    words = _COMMON + _RARE + _PREFIXED
    weights = [12] * len(_COMMON) + [0.1] * len(_RARE) + [2] * len(_PREFIXED)
    for i in range(first, first + n):
        first = " ".join(rng.choices(words, weights, k=rng.randint(2, 6)))
        rest = " ".join(rng.choices(words, weights, k=rng.randint(0, 25)))
        description = first + ("\n" + rest if rest else "")
        name = f"{rng.choice(_COMMON)}/{rng.choice(words)}-{rng.choice(words)}-{i}"
        make_repo(session, name, description=description, pull_count=rng.randint(0, 10**4))
    session.flush()


def _queries(rng: random.Random) -> list[tuple[str, bool]]:
    words = _COMMON + _RARE + _PREFIXED
    queries: list[tuple[str, bool]] = []
    for _ in range(40):
        a, b, c = rng.choice(_COMMON), rng.choice(words), rng.choice(_COMMON)
        queries.append((f'"{a} {b}"', False))
        queries.append((f'"{a} {c} {b}"', False))
        queries.append((f"{a}-{b[:3]}", True))  # typed: the last word a prefix
        queries.append((f"{a}-{b[:4]}", True))
        queries.append((f"{a}-{b[:2]}", True))
        queries.append((f'"{a} {c}" -{rng.choice(_RARE)}', False))
        queries.append((f'"{a} {b}" OR "{c} {a}"', False))
    return list(dict.fromkeys(queries))


def _expected(session: Session, q: str, typed: bool) -> set[str]:
    """The documents holding the phrase (the last word as a prefix when typed) in one of
    their indexed fields (words, then their extra forms: what both engines index)."""
    query = parse(q, as_you_type=typed)
    rows = session.execute(
        text("SELECT name, fts_name, fts_title, fts_summary, fts_body FROM search_documents")
    ).all()

    def holds(fields: tuple[str, ...], phrase: Any) -> bool:
        n = len(phrase.tokens)
        for index, field in enumerate(fields):
            tokens = field.split()
            for i in range(len(tokens) - n + 1):
                window = tokens[i : i + n]
                if window[:-1] != list(phrase.tokens[:-1]):
                    continue
                last, want = window[-1], phrase.tokens[-1]
                if phrase.prefix and len(want) == 2:
                    # A 2-character prefix: words of names and titles only (or the word).
                    if last == want or (last.startswith(want) and index < 2):
                        return True
                elif last == want or (phrase.prefix and last.startswith(want)):
                    return True
        return False

    found = set()
    for name, *fields in rows:
        if all(any(holds(tuple(fields), p) for p in group) for group in query.groups) and not any(
            holds(tuple(fields), p) for p in query.excluded
        ):
            found.add(name)
    return found


def _names(session: Session, q: str, as_you_type: bool) -> list[str]:
    results = service.search(session, q=q, as_you_type=as_you_type, per_page=100)
    return [h.doc.name for h in results.hits]


def test_phrases_find_the_same_with_and_without_grams(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every phrase query finds the documents holding the phrase, in the same order with
    and without grams (PostgreSQL: the index rebuilt with a vocabulary of common words, the
    queries asking for their grams or not), including documents written since the rebuild
    by the listeners (which write the grams of the vocabulary the index was built with)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        from store.search import postgres_fts

        monkeypatch.setattr(postgres_fts, "_COMMON_LEAST", 1)
    _corpus(session)
    indexer.reindex(session.connection())
    _corpus(session, 30, first=1000)  # written by the listeners after the rebuild
    queries = _queries(random.Random(7))
    with_grams = {q: _names(session, q, typed) for q, typed in queries}
    for q, typed in queries:
        assert len(with_grams[q]) < 100, q
        assert set(with_grams[q]) == _expected(session, q, typed), q
    assert sum(1 for found in with_grams.values() if found) > len(queries) // 2
    if not postgres:
        return
    common = postgres_fts.common_words(session.connection())
    assert set(_COMMON) <= common and "*:bet" in common
    grams = session.scalar(
        text(
            "SELECT count(*) FROM search_fts_terms, unnest(tsv) AS u "
            "WHERE starts_with(u.lexeme, '~:')"
        )
    )
    assert grams > 150
    asked = postgres_fts.tsquery(
        Criteria(parse('"alpha beta"')), common=postgres_fts.common_words(session.connection())
    )
    assert f"'{gram('alpha', 'beta')}' & ('alpha' <-> 'beta')" in asked
    monkeypatch.setattr(postgres_fts.PostgresBackend, "_common", lambda *a: frozenset())
    without = {q: _names(session, q, typed) for q, typed in queries}
    assert without == with_grams


def test_a_rebuild_only_adds_common_words(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a rebuild lists the words in at least 5 % of the documents and keeps
    those listed before (a search that read the list before the rebuild committed asks only
    for grams the new index holds); the grams of a word listed before are still written."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the vocabulary of common words is PostgreSQL's")
    from store.search import postgres_fts

    monkeypatch.setattr(postgres_fts, "_COMMON_LEAST", 1)
    session.execute(text("INSERT INTO search_fts_common (lexeme) VALUES ('numbat')"))
    _corpus(session)
    make_repo(session, "once/only", description="zzonce alpha")
    indexer.reindex(session.connection())
    common = postgres_fts.common_words(session.connection())
    assert "numbat" in common and "alpha" in common and "zzonce" not in common
    make_repo(session, "late/one", description="numbat alpha numbat")
    session.flush()
    tsv = session.scalar(
        text(
            "SELECT CAST(tsv AS text) FROM search_fts_terms JOIN search_documents USING (id) "
            "WHERE name = 'late/one'"
        )
    )
    assert f"'{gram('numbat', 'alpha')}'" in tsv and f"'{gram('alpha', 'numbat')}'" in tsv
    assert "late/one" in _names(session, '"alpha numbat"', False)


def test_no_common_words_in_a_small_index(session: Session) -> None:
    """PostgreSQL: below _COMMON_LEAST documents a rebuild lists no common words (no phrase
    there is costly), and the index holds no grams."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the vocabulary of common words is PostgreSQL's")
    from store.search import postgres_fts

    _corpus(session, 40)
    indexer.reindex(session.connection())
    assert postgres_fts.common_words(session.connection()) == frozenset()
    assert not session.scalar(
        text(
            "SELECT count(*) FROM search_fts_terms, unnest(tsv) AS u "
            "WHERE starts_with(u.lexeme, '~:')"
        )
    )


def test_the_anywhere_tsvectors_stay_inline_through_a_rebuild(session: Session) -> None:
    """PostgreSQL: search_fts_terms keeps rows up to 4 KB inline and uncompressed (a phrase
    recheck reads them as they are), also after a rebuild swapped in new tables."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL's tsvector tables")
    options = text("SELECT reloptions FROM pg_class WHERE oid = to_regclass('search_fts_terms')")
    assert "toast_tuple_target=4080" in session.scalar(options)
    _corpus(session, 10)
    indexer.reindex(session.connection())
    assert "toast_tuple_target=4080" in session.scalar(options)
