"""The query parser and its rendering for both engines (no database)."""

from __future__ import annotations

import pytest

from store.search.query import (
    TIER_WEIGHTS,
    BadQuery,
    Phrase,
    fts5_text,
    parse,
    tokenize,
    tsquery_prefix_key,
    tsquery_text,
)


def test_tokenize_splits_names_and_folds() -> None:
    assert tokenize("acme/Redis-HA_v2.1") == ["acme", "redis", "ha", "v2", "1"]
    assert tokenize("Ünïcödé Straße") == ["unicode", "strasse"]


@pytest.mark.parametrize(
    ("text", "groups", "excluded"),
    [
        # Single words are stemmed (English Snowball): "redis" → "redi", "cache" → "cach".
        ("redis cache", [["redi"], ["cach"]], []),
        ('"in memory" db', [["in memory"], ["db"]], []),
        ("redis -alpine", [["redi"]], ["alpin"]),
        ("redis OR valkey cache", [["redi", "valkey"], ["cach"]], []),
        ("acme/redis-ha", [["acme redis ha"]], []),
        ("!!! redis", [["redi"]], []),
        ("running servers", [["run"], ["server"]], []),
        ('"unterminated phrase', [["unterminated phrase"]], []),
    ],
)
def test_parse(text: str, groups: list[list[str]], excluded: list[str]) -> None:
    q = parse(text)
    assert [[" ".join(p.tokens) for p in g] for g in q.groups] == groups
    assert [" ".join(p.tokens) for p in q.excluded] == excluded


def test_prefix_needs_two_characters() -> None:
    assert parse("re*").groups == [[Phrase(("re",), True)]]
    assert parse("r*").groups == [[Phrase(("r",), False)]]
    assert parse("redis cac", as_you_type=True).groups[-1] == [Phrase(("cac",), True)]
    assert parse("redis cac ", as_you_type=True).groups[-1] == [Phrase(("cac",), False)]


def test_exact_name_only_for_a_bare_name() -> None:
    assert parse("Redis").exact_name == "redis"
    assert parse("acme/redis-ha").exact_name == "acme/redis-ha"
    assert parse("redis cache").exact_name is None
    assert parse('"redis"').exact_name is None or parse('"redis"').exact_name == "redis"


@pytest.mark.parametrize(
    "text", ["x" * 257, " ".join(f"w{i}" for i in range(17)), "-alpine", "-a -b"]
)
def test_bad_queries(text: str) -> None:
    with pytest.raises(BadQuery):
        parse(text)


def test_rendering_quotes_everything() -> None:
    q = parse('NEAR( col:x "a bc"* -c OR d')
    fts = fts5_text(q, 0)
    ts = tsquery_text(q, TIER_WEIGHTS[3])
    assert fts is not None and ts is not None
    assert "NEAR(" not in fts and "col:" not in fts
    # A 2-character prefix matches the word anywhere or the prefix in names and titles.
    assert '"near"' in fts and '("a bc" OR {fts_name fts_title} : "a bc"*)' in fts
    # 2- and 3-character prefixes are lexemes of their own on PostgreSQL (a 2-character one
    # of the words of names and titles only), a 2-character one is the word or that lexeme;
    # longer ones expand.
    assert "'a':A <-> ('bc':A | '*:bc':A)" in ts
    assert "'*:abc':A" in (tsquery_text(parse("abc*"), TIER_WEIGHTS[3]) or "")
    assert "'abcd':*A" in (tsquery_text(parse("abcd*"), TIER_WEIGHTS[3]) or "")


def test_prefixes_rendered_as_the_lexemes_they_start() -> None:
    """PostgreSQL: a prefix looked up in the index's vocabulary is asked for as the lexemes
    it starts (weights kept, inside phrases too); one not looked up, or starting nothing,
    stays a partial match."""
    assert tsquery_prefix_key("abcd") == "abcd"
    assert tsquery_prefix_key("ab") is None  # the word or one prefix lexeme, matched exactly
    assert tsquery_prefix_key("abc") is None  # one prefix lexeme, matched exactly
    expansions = {"redi": ["redis", "redish"], "*:bc": ["*:bcd"], "acm": ["acme"]}
    ts = tsquery_text(parse('"a bc"* redi*'), TIER_WEIGHTS[3], expansions=expansions)
    assert ts == "((('a':A <-> ('bc':A | '*:bc':A))) & ((('redis':A | 'redish':A))))"
    typed = parse("runs", as_you_type=True)  # typed so far, or its stem
    assert tsquery_text(typed, expansions={"runs": ["runs", "runsa"]}) == (
        "(((('runs' | 'runsa')) | ('run')))"
    )
    assert tsquery_text(typed, expansions={}) == "((('runs':*) | ('run')))"
    assert tsquery_text(parse("x -redi*"), expansions=expansions) == (
        "((('x')) & !(('redis' | 'redish')))"
    )


def test_repeated_words_count_once() -> None:
    assert parse("redis redis").groups == parse("redis").groups
    assert parse("a OR a b b").groups == parse("a b").groups
    assert parse("x -y -y").excluded == parse("x -y").excluded


def test_text_pool_builds_the_same_text_in_order() -> None:
    """A full reindex's worker processes (and the share the reindexing process takes back
    from them) give each field exactly the text index_texts gives, in the jobs' order."""
    from store.search.query import index_texts
    from store.search.workers import WorkerPool

    jobs: list[tuple[str, int | None]] = [
        (f"Item{i} running PGVault caches {i % 7} déjà-vu", 3 if i % 5 == 0 else None)
        for i in range(1000)
    ]
    pool = WorkerPool(1)
    try:
        assert pool.texts(jobs) == index_texts(jobs)
        assert pool.texts([]) == []
    finally:
        pool.close()
