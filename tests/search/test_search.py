"""Search behaviour on the configured backends (SQLite FTS5 always, PostgreSQL when set)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session

from store.catalog import service as catalog
from store.registry.models import HubRepository
from store.search import indexer, service
from store.search.backend import Criteria
from store.search.models import SearchDocument
from store.search.query import gram, parse
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier
from tests.search.helpers import make_repo, stored_index


def names(session: Session, q: str, account=None, **filters: str) -> list[str]:
    results = service.search(
        session, q=q, account=account, filters=service.make_filters(**filters), per_page=100
    )
    return [h.doc.name for h in results.hits]


@pytest.fixture
def world(session: Session) -> dict:
    owner = make_account(session, "owner")
    admin = make_admin(session)
    acme = make_org(session, owner, "acme", name="Acme Corp")
    bigco = make_org(session, owner, "bigco", name="BigCo")
    acme.verified_at = datetime(2026, 1, 1, tzinfo=UTC)
    catalog.ensure_category(session, "databases", "Databases")
    catalog.ensure_category(session, "monitoring", "Monitoring")
    cache = make_product(
        session,
        bigco,
        owner,
        "fastcache",
        title="Fast Cache",
        summary="An in memory key value store, redis compatible",
        categories=["databases"],
        platforms=["linux/amd64", "linux/arm64"],
        tiers=[{"slug": "free", "billing": "free"}, paid_tier(trial_days=14)],
    )
    catalog.set_badges(session, actor=admin, product=cache, official=True)
    make_product(
        session,
        acme,
        owner,
        "redis-ha",
        title="Redis HA",
        summary="Highly available redis with sentinel",
        categories=["databases"],
        platforms=["linux/amd64"],
        tiers=[paid_tier()],
    )
    make_product(
        session,
        bigco,
        owner,
        "watchtower",
        kind="plugin",
        title="Watch Tower",
        summary="Monitoring plugin for clusters",
        categories=["monitoring"],
    )
    make_product(session, bigco, owner, "secret-draft", title="Secret Redis Draft", publish=False)
    make_repo(session, "someone/redis", description="Plain redis build", pull_count=5)
    make_repo(session, "someone/memcache", description="A memory cache daemon", pull_count=10**6)
    make_repo(session, "bigco/private-redis", description="internal redis", private=True)
    make_repo(session, "acme/redis-ha", description="the listing's repository", pull_count=100)
    session.flush()
    return {"owner": owner, "admin": admin, "acme": acme, "bigco": bigco, "cache": cache}


def test_exact_name_first(session: Session, world: dict) -> None:
    found = names(session, "redis")
    assert found[0] == "someone/redis"  # exact name beats badges and popularity
    assert set(found) == {"someone/redis", "bigco/fastcache", "acme/redis-ha"}
    assert names(session, "acme/redis-ha")[0] == "acme/redis-ha"


def test_badges_before_plain_then_field_tiers(session: Session, world: dict) -> None:
    # "memory": fastcache (official, summary) vs someone/memcache (plain, popular, body).
    assert names(session, "memory") == ["bigco/fastcache", "someone/memcache"]
    # Same badge class (verified acme vs none): verified publisher first.
    found = names(session, "redis sentinel OR ha")
    assert found == ["acme/redis-ha"]


def test_name_match_beats_description_match(session: Session, world: dict) -> None:
    make_repo(session, "zed/cache", description="cache", pull_count=1)
    make_repo(session, "zed/other", description="a cache for everything", pull_count=10**7)
    found = names(session, "cache -memory -fast")
    assert found.index("zed/cache") < found.index("zed/other")


def test_phrase_and_exclusion(session: Session, world: dict) -> None:
    assert names(session, '"in memory"') == ["bigco/fastcache"]
    assert names(session, '"memory in"') == []
    assert "bigco/fastcache" not in names(session, "redis -compatible")
    assert names(session, "redis -compatible -sentinel") == ["someone/redis"]


def test_or_and_prefix(session: Session, world: dict) -> None:
    assert set(names(session, "sentinel OR clusters")) == {"acme/redis-ha", "bigco/watchtower"}
    assert set(names(session, "watch*")) == {"bigco/watchtower"}
    results = service.search(session, q="memc", as_you_type=True)
    assert [h.doc.name for h in results.hits] == ["someone/memcache"]


def test_facet_counts_and_filters(session: Session, world: dict) -> None:
    results = service.search(session, q="")
    f = {k: {v.value: v.count for v in vs} for k, vs in results.facets.items()}
    assert results.total == 5 and results.total_exact
    assert f["source"] == {"store": 3, "hub": 2}
    assert f["kind"] == {"image": 4, "plugin": 1}
    assert f["category"] == {"databases": 2, "monitoring": 1}
    assert f["pricing"] == {"free": 2, "paid": 2, "trial": 1}
    assert f["badge"] == {"official": 1, "verified": 1, "community": 3}
    assert f["platform"] == {"linux/amd64": 2, "linux/arm64": 1}
    assert f["publisher"] == {"bigco": 2, "someone": 2, "acme": 1}, f["publisher"]
    labels = {v.value: v.label for v in results.facets["category"]}
    assert labels["databases"] == "Databases"
    assert names(session, "redis", category="databases") == ["bigco/fastcache", "acme/redis-ha"]
    assert names(session, "", kind="plugin") == ["bigco/watchtower"]
    assert names(session, "redis", pricing="trial") == ["bigco/fastcache"]
    assert names(session, "", source="hub", badge="official") == []
    assert names(session, "", publisher="acme") == ["acme/redis-ha"]
    assert names(session, "", platform="linux/arm64") == ["bigco/fastcache"]


def test_visibility(session: Session, world: dict) -> None:
    stranger = make_account(session, "stranger")
    member = make_account(session, "member")
    _add_member(session, world["bigco"], member)
    hidden = {"bigco/secret-draft", "bigco/private-redis"}
    for who in (None, stranger):
        assert not hidden & set(names(session, "redis", account=who))
        assert not hidden & set(names(session, "", account=who))
    assert hidden <= set(names(session, "redis", account=member))
    assert hidden <= set(names(session, "redis", account=world["admin"]))
    # The listed repository appears once, as its listing.
    assert names(session, "acme/redis-ha", account=world["admin"]).count("acme/redis-ha") == 1


def _add_member(session: Session, org, account) -> None:
    from store.accounts.models import Membership

    session.add(Membership(organization_id=org.id, account_id=account.id, role="viewer"))
    session.flush()


def test_index_follows_changes(session: Session, world: dict) -> None:
    cache = world["cache"]
    catalog.update_product(session, actor=world["owner"], product=cache, title="Turbo Store")
    assert names(session, "turbo") == ["bigco/fastcache"]
    catalog.set_status(session, actor=world["owner"], product=cache, status="draft")
    assert "bigco/fastcache" not in names(session, "turbo")
    world["acme"].verified_at = None
    session.flush()
    doc = session.scalar(select(SearchDocument).where(SearchDocument.name == "acme/redis-ha"))
    assert doc is not None and not doc.verified
    # ORM-enabled bulk updates are seen too (pull counts move popularity).
    session.execute(
        update(HubRepository)
        .where(HubRepository.name == "someone/redis")
        .values(description="now about valkey")
    )
    assert names(session, "valkey") == ["someone/redis"]
    repo = session.scalar(select(HubRepository).where(HubRepository.name == "someone/memcache"))
    session.delete(repo)
    session.flush()
    assert names(session, "daemon") == []


def test_publishing_a_listing_hides_its_hub_repository(session: Session, world: dict) -> None:
    owner = world["owner"]
    make_repo(session, "acme/newthing", description="newthing image")
    assert names(session, "newthing") == ["acme/newthing"]
    product = make_product(session, world["acme"], owner, "newthing", title="New Thing")
    results = service.search(session, q="newthing")
    assert [(h.doc.source, h.doc.name) for h in results.hits] == [("store", "acme/newthing")]
    assert product.status == "published"


@pytest.mark.parametrize("workers", [None, 1], ids=["in-process", "worker-process"])
def test_reindex_matches_incremental(session: Session, world: dict, workers: int | None) -> None:
    """A full reindex writes the documents the listeners wrote, whether their text is built
    in this process or (a large reindex) in worker processes too."""
    before = names(session, "redis", account=world["admin"])
    fields = ("fts_facets", "fts_name", "fts_title", "fts_summary", "fts_body")
    docs = {
        d.ref_id: [getattr(d, f) for f in fields] for d in session.scalars(select(SearchDocument))
    }
    counts = indexer.reindex(session.connection(), workers=workers)
    assert counts["changed"] == 0 and counts["store"] == 4 and counts["hub"] == 4
    session.expire_all()
    assert {
        d.ref_id: [getattr(d, f) for f in fields] for d in session.scalars(select(SearchDocument))
    } == docs
    assert names(session, "redis", account=world["admin"]) == before


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker-process"])
def test_reindex_from_nothing_stores_what_the_listeners_stored(
    session: Session, world: dict, workers: int
) -> None:
    """A full reindex of an empty index inserts its documents (and on PostgreSQL copies
    their tsvectors, built in worker processes or not) exactly as the listeners' writes
    stored them, value for value."""
    make_repo(session, "acme/dated", description="O'Brien's back\\slash tool", pull_count=5)
    indexer.write_pending(session)
    before = stored_index(session.connection())
    found = names(session, "redis", account=world["admin"])
    assert len(before["documents"]) == 9
    session.execute(text("DELETE FROM search_documents"))
    counts = indexer.reindex(session.connection(), workers=workers)
    assert counts["changed"] == 9
    assert stored_index(session.connection()) == before
    assert names(session, "redis", account=world["admin"]) == found


def test_copied_tsvectors_are_the_literals_whatever_they_hold(session: Session) -> None:
    """The COPY input a full rebuild builds (in worker processes, in COPY's binary format)
    gives every tsvector its literal, byte for byte: words holding a quote, a backslash or
    non-ASCII letters, fields whose positions overlap (a name of more than 100 words runs
    into the title's) or pass the last position (16383), more than 256 occurrences,
    repeated facet tokens, an empty document."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL's tsvector tables")
    from store.search import postgres_fts

    long_name = " ".join(f"w{i % 37}" for i in range(150))
    docs = [
        {
            "id": 12345,
            "fts_name": "o'brien back\\slash",
            "fts_title": "it's",
            "fts_summary": "\\\\ \\'",
            "fts_body": "plain words back\\slash ünïcode",
            "fts_facets": "* k:image",
        },
        {
            "id": -(1 << 62),
            "fts_name": long_name,
            "fts_title": "w1 w2 title",
            "fts_summary": "sum w3 " + "abx " * 300,
            "fts_body": "abc " * 400,
            "fts_facets": "k:image k:image x:all",
        },
        {
            "id": 7,
            "fts_name": "a",
            "fts_title": "",
            "fts_summary": "",
            "fts_body": " ".join(f"t{i % 300}" for i in range(16000)),
            "fts_facets": "",
        },
        {"id": 8, **dict.fromkeys(postgres_fts._DOC_KEYS[1:], "")},
        {
            "id": 9,
            "fts_name": "acme redis",
            "fts_title": "redis cache",
            "fts_summary": "fast redis",
            "fts_body": "fast redis and more",
            "fts_facets": "x:all k:image",
        },
    ]
    # Common words (grams of adjacent pairs, positions overlapping and clamped included).
    common = frozenset({"w1", "w2", "w3", "abc", "*:abx", "redis", "fast", "t1", "t2", "*:t29"})
    [(terms, fields, words)] = postgres_fts.copy_data(
        [[doc[k] for k in postgres_fts._DOC_KEYS] for doc in docs], common
    )
    assert words == postgres_fts.vocabulary(docs) and "*:bac" in words
    conn = session.connection()
    conn.exec_driver_sql("CREATE TEMP TABLE copied_terms (id bigint, tags tsvector, tsv tsvector)")
    conn.exec_driver_sql("CREATE TEMP TABLE copied_fields (id bigint, head tsvector, mid tsvector)")
    cursor = conn.connection.driver_connection.cursor()
    for table, data in (("copied_terms", terms), ("copied_fields", fields)):
        with cursor.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(postgres_fts.COPY_SIGNATURE + data + postgres_fts.COPY_TRAILER)
    for doc in docs:
        literals = postgres_fts.tsvector_literals(doc, common)
        # `=` on tsvectors compares their stored bytes (size, layout), not only content.
        copied = conn.execute(
            text(
                "SELECT t.tags = CAST(:tags AS tsvector), t.tsv = CAST(:tsv AS tsvector), "
                "f.head = CAST(:head AS tsvector), f.mid = CAST(:mid AS tsvector), "
                "CAST(t.tsv AS text) FROM copied_terms t JOIN copied_fields f USING (id) "
                "WHERE id = :id"
            ),
            {**literals, "id": doc["id"]},
        ).one()
        assert copied[:4] == (True, True, True, True), doc["id"]
    held = conn.execute(
        text("SELECT CAST(tsv AS text) FROM copied_terms WHERE id = -(1::bigint << 62)")
    ).scalar_one()
    pairs = [("w1", "w2"), ("abc", "abc"), ("w3", "*:abx"), ("sum", "w3"), ("redis", "fast")]
    assert [f"'{gram(a, b)}'" in held for a, b in pairs] == [True, True, True, False, False]
    assert (
        "'back\\\\slash'"
        in conn.execute(
            text("SELECT CAST(tsv AS text) FROM copied_terms WHERE id = 12345")
        ).scalar_one()
    )


def _positions(literal: str) -> dict[str, set[int]]:
    """A tsvector literal's (or its text's) positions by lexeme (lexemes with positions)."""
    return {
        lexeme: {int(p.rstrip("ABCD")) for p in positions.split(",")}
        for lexeme, positions in re.findall(r"'([^']*)':([0-9A-D,]+)", literal)
    }


def test_a_summary_the_body_starts_with_is_indexed_once_in_tsv() -> None:
    """A hub repository's summary is the first line of its description: the "anywhere"
    tsvector indexes it once, as the body's start (positions 1001…), not at the summary's
    positions (301…) too; a summary the body does not start with keeps its own."""
    from store.search import postgres_fts

    doc = {
        "id": 7,
        "fts_name": "acme redis",
        "fts_title": "",
        "fts_summary": "fast cache store",
        "fts_body": "fast cache store readme words",
        "fts_facets": "k:image",
    }
    assert postgres_fts.body_repeats_summary(doc)
    tsv = _positions(postgres_fts.tsvector_literals(doc)["tsv"])
    assert tsv["fast"] == {1001} and tsv["*:fas"] == {1001} and tsv["readme"] == {1004}
    mid = _positions(postgres_fts.tsvector_literals(doc)["mid"])
    assert mid["fast"] == {301}  # the summary tier still has the summary
    for body in ("fast cache storehouse", "readme fast cache store", "fast cache"):
        other = {**doc, "fts_body": body}
        assert not postgres_fts.body_repeats_summary(other)
        assert 301 in _positions(postgres_fts.tsvector_literals(other)["tsv"])["fast"]


def test_a_description_indexed_once_finds_what_it_found(session: Session) -> None:
    """Words, prefixes and phrases of a one-line summary are found through the body's start
    in the "anywhere" tier, on both backends alike (PostgreSQL stores them once)."""
    make_repo(session, "acme/zed", description="Quokka wombat numbat\nbilby quoll", pull_count=3)
    make_repo(session, "acme/other", description="numbat wombat quokka", pull_count=2)
    assert names(session, "quokka") == ["acme/zed", "acme/other"]
    assert names(session, '"quokka wombat"') == ["acme/zed"]
    assert names(session, "quokka-wom") == ["acme/zed"]
    assert names(session, '"numbat bilby"') == ["acme/zed"]  # across the first line's end
    assert names(session, "wombat -bilby") == ["acme/other"]
    assert names(session, "zed numbat") == ["acme/zed"]
    if session.get_bind().dialect.name == "postgresql":
        stored = session.execute(
            text(
                "SELECT CAST(t.tsv AS text) FROM search_fts_terms t "
                "JOIN search_documents d USING (id) WHERE d.name = 'acme/zed'"
            )
        ).scalar_one()
        assert _positions(stored)["quokka"] == {1001}


@pytest.mark.parametrize("prefix", ["pr", "pl", "rb", "rc", "re", "red"])
def test_prefixes_match_words_not_facet_tokens(session: Session, world: dict, prefix: str) -> None:
    """Facet, visibility and rank-band tokens are indexed beside the words: typing "pr" must
    not find every paid listing through its pricing token (nor "pl" its platforms)."""
    results = service.search(session, q=prefix, as_you_type=True, per_page=100)
    for hit in results.hits:
        d = hit.doc
        words = f"{d.fts_name} {d.fts_title} {d.fts_summary} {d.fts_body}".split()
        assert any(w.startswith(prefix) for w in words), (prefix, d.name)
    assert set(results.facets) and results.total == len(results.hits)
    if prefix == "re":
        assert "acme/redis-ha" in [h.doc.name for h in results.hits]


def test_two_character_prefix_matches_names_and_titles(session: Session, world: dict) -> None:
    """Typing two letters is looking for a name: a 2-character prefix matches words of names
    and titles only (or the 2-character word itself anywhere), alone, in a phrase and
    excluded, on both backends alike. Longer prefixes match every field."""
    assert names(session, "me") == ["someone/memcache"]  # not fastcache's "memory" summary
    typed = service.search(session, q="me*", as_you_type=False)
    assert [h.doc.name for h in typed.hits] == ["someone/memcache"]
    assert set(names(session, "mem")) == {"bigco/fastcache", "someone/memcache"}
    assert names(session, "in") == ["bigco/fastcache"]  # the word "in" of its summary
    assert names(session, "in-me") == []  # "in memory" is in a summary
    assert names(session, "in-mem") == names(session, '"in memory"') == ["bigco/fastcache"]
    assert names(session, "fast-ca") == ["bigco/fastcache"]  # its title, "Fast Cache"
    excluded = service.search(session, q="cache -me*", as_you_type=False, per_page=100)
    found = [h.doc.name for h in excluded.hits]
    assert "bigco/fastcache" in found and "someone/memcache" not in found
    results = service.search(session, q="ca", as_you_type=True)
    assert [h.doc.name for h in results.hits] == ["bigco/fastcache"]
    assert results.total == 1 and results.facets["source"][0].count == 1


def test_stable_pagination(session: Session, world: dict) -> None:
    for i in range(30):
        make_repo(session, f"bulk/item{i:02d}", description="widget", pull_count=i % 3)
    pages = [
        [h.doc.name for h in service.search(session, q="widget", page=p, per_page=7).hits]
        for p in range(1, 6)
    ]
    flat = [n for page in pages for n in page]
    assert len(flat) == 30 and len(set(flat)) == 30
    assert flat == names(session, "widget")


def test_rank_band_ranges_cover_every_band_once() -> None:
    from store.search.postgres_fts import _LAST_BAND, range_tokens

    def bands(token: str) -> range:
        prefix, _, n = token.partition(":")
        size = {"r": 1, "rb": 8, "rc": 64}[prefix]
        return range(int(n) * size, (int(n) + 1) * size)

    for first, last in [(0, _LAST_BAND), (0, 0), (3, 70), (63, 448), (500, _LAST_BAND)]:
        covered = [b for t in range_tokens(first, last) for b in bands(t)]
        assert covered == list(range(first, last + 1))
    assert len(range_tokens(0, _LAST_BAND)) == 8


def test_band_filters_select_exactly_their_bands() -> None:
    """A band range is asked for as its tokens or as the negation of the others' (fewer
    documents): either way exactly bands first..last."""
    import re

    from store.search.postgres_fts import _LAST_BAND, _band_filter

    sizes = {"r": 1, "rb": 8, "rc": 64}
    skewed = [(100, 10), (300, 2_000), (500, 20_000), (510, 150_000), (_LAST_BAND, 200_000)]
    for cumulative in ([], skewed):
        for first, last in [(0, _LAST_BAND), (0, 447), (0, 510), (3, 70), (448, _LAST_BAND)]:
            found = _band_filter(first, last, cumulative)
            if first == 0 and last == _LAST_BAND:
                assert found == ""
                continue
            bands = {
                band
                for prefix, n in re.findall(r"'(rc|rb|r):(\d+)'", found)
                for band in range(int(n) * sizes[prefix], (int(n) + 1) * sizes[prefix])
            }
            if found.startswith(" & !"):
                bands = set(range(_LAST_BAND + 1)) - bands
            assert bands == set(range(first, last + 1)), (first, last, found)
    assert _band_filter(0, 510, skewed) == " & !('r:511')"


def test_banded_retrieval_matches_a_plain_ranking(
    session: Session, world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL asks for matches band range by band range: pages must be exactly those of
    one pass, also when the cached band histogram is stale (SQLite: same pages anyway)."""
    from store.search import postgres_fts

    for i in range(60):
        make_repo(session, f"band/item{i:02d}", description="gadget", pull_count=7 ** (i % 9))

    def pages() -> list[list[str]]:
        return [
            [h.doc.name for h in service.search(session, q=q, page=p, per_page=9).hits]
            for q in ("gadget", "", "gad", "band ga")
            for p in range(1, 8)
        ]

    monkeypatch.setattr(postgres_fts, "_FIRST_STEP", 10**9)  # one pass
    expected = pages()
    monkeypatch.setattr(postgres_fts, "_FIRST_STEP", 0.05)  # many small band ranges
    postgres_fts._stats_cache.clear()
    assert pages() == expected
    for i in range(10):  # in bands the cached histogram has not seen
        make_repo(session, f"band/new{i}", description="gadget", pull_count=2 ** (30 + i))
    stale = pages()
    assert "band/new9" in stale[0]
    monkeypatch.setattr(postgres_fts, "_FIRST_STEP", 10**9)
    assert stale == pages()


def test_banded_retrieval_from_planner_statistics(
    session: Session, world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ANALYZE's statistics (a large index), band ranges come from the key histogram
    and each word's share of documents: pages are still exactly those of one pass, for words
    the statistics list, words they do not, prefixes and filters."""
    from store.search import postgres_fts

    for i in range(120):
        words = "gadget common" if i % 2 else "gadget rare"
        make_repo(session, f"stat/item{i:03d}", description=words, pull_count=3 ** (i % 11))
    queries = ("gadget", "common", "rare", "ga", "gadg", "common OR rare", "item1*", "-rare gadget")

    def pages() -> list[list[str]]:
        return [
            [h.doc.name for h in service.search(session, q=q, page=p, per_page=7).hits]
            for q in queries
            for p in range(1, 4)
        ]

    monkeypatch.setattr(postgres_fts, "_FIRST_STEP", 10**9)
    postgres_fts._stats_cache.clear()
    expected = pages()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE search_fts_terms, search_fts_fields"))
        monkeypatch.setattr(postgres_fts, "_SAMPLED_ROWS", 1)
        monkeypatch.setattr(postgres_fts, "_MARGIN", 0.01)  # ranges far too small: many rounds
        postgres_fts._stats_cache.clear()
        stats = postgres_fts._stats(session.connection())
        assert (
            stats.shares["tsv"].lexemes
            and stats.shares["mid"].lexemes
            and len(stats.cumulative) > 1
        )
        assert stats.density("tsv", Criteria(parse("gadget"))) == pytest.approx(1.0, abs=0.1)
    assert pages() == expected


def _new_word() -> str:
    """A word no earlier test or run has indexed (the PostgreSQL vocabulary outlives the
    tests' rolled-back transactions)."""
    return "zq" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])


def test_prefix_finds_words_new_to_the_index(session: Session, world: dict) -> None:
    """A prefix starting a word of the last reindex and a word first written since (by the
    listeners) finds both: on PostgreSQL the prefix is asked for as the lexemes the
    vocabulary lists, so a new word must be listed when its document is written."""
    word = _new_word()
    make_repo(session, "vocab/old", description=f"{word}a")
    indexer.reindex(session.connection())
    make_repo(session, "vocab/new", description=f"{word}ab")
    make_repo(session, "vocab/other", description=f"{word}b")
    session.flush()
    assert sorted(names(session, word + "a")) == ["vocab/new", "vocab/old"]
    assert sorted(names(session, f"{word}a*")) == ["vocab/new", "vocab/old"]
    assert sorted(names(session, f"vocab {word[:3]}")) == ["vocab/new", "vocab/old", "vocab/other"]
    if session.get_bind().dialect.name == "postgresql":
        from store.search import postgres_fts

        criteria = Criteria(parse(word + "a", as_you_type=True))
        assert postgres_fts.expansions(session.connection(), criteria) == {
            word + "a": [word + "a", word + "ab"]
        }


def test_vocabulary_holds_every_lexeme_a_prefix_can_start(
    session: Session, world: dict, engine: Engine
) -> None:
    """PostgreSQL: after a reindex and after writes by the listeners, every word and
    3-character prefix lexeme of the index is in the vocabulary (not the 2-character ones:
    never looked up, a 2-character prefix is asked for as that lexeme), committed before the
    document holding it (another connection sees it while the writer is still open)."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the vocabulary is PostgreSQL's")
    quiet = _new_word()  # written without the listeners: indexed by the reindex only
    session.execute(
        insert(HubRepository).values(
            name=f"vocab/{quiet}", namespace="vocab", description=quiet, visibility="public"
        )
    )
    indexer.reindex(session.connection())
    assert names(session, quiet[:-1]) == [f"vocab/{quiet}"]
    word = _new_word()
    make_repo(session, "vocab/fresh", description=f"{word} Fresh-Words")
    session.flush()
    missing = session.scalar(
        text(
            "SELECT count(*) FROM (SELECT DISTINCT u.lexeme FROM search_fts_terms, unnest(tsv) "
            "AS u WHERE strpos(u.lexeme, ':') = 0 "
            "OR starts_with(u.lexeme, '*:') AND length(u.lexeme) = 5) AS l "
            "WHERE NOT EXISTS (SELECT FROM search_fts_vocabulary AS v WHERE v.lexeme = l.lexeme)"
        )
    )
    assert missing == 0
    with engine.connect() as other:
        listed = other.scalars(
            text("SELECT lexeme FROM search_fts_vocabulary WHERE lexeme = ANY(:w)"),
            {"w": [word, "*:" + word[:3], "fresh"]},
        ).all()
    assert sorted(listed) == sorted([word, "*:" + word[:3], "fresh"])


def test_rebuild_commits_its_vocabulary_once(
    session: Session, world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a full rebuild filling its tables in many batches looks up and commits
    the lexemes they hold once, after the last batch (per batch, each commit flushed the WAL
    of every row copied before it), and every one of them is listed."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the vocabulary is PostgreSQL's")
    from store.search import postgres_fts

    word = _new_word()
    for i in range(6):
        make_repo(session, f"vocab/batch{i}", description=f"{word}{chr(ord('a') + i)}")
    session.flush()
    calls: list[set[str]] = []
    add_words = postgres_fts._add_words

    def counted(conn: Any, words: set[str]) -> None:
        calls.append(set(words))
        add_words(conn, words)

    filled: list[int] = []
    catch_up = postgres_fts._catch_up

    def after_fill(*args: Any) -> None:
        filled.append(len(calls))
        catch_up(*args)

    monkeypatch.setattr(postgres_fts, "_add_words", counted)
    monkeypatch.setattr(postgres_fts, "_catch_up", after_fill)
    monkeypatch.setattr(postgres_fts, "_COPY_BATCH", 2)
    indexer.reindex(session.connection())
    assert filled == [1]
    assert {f"{word}{chr(ord('a') + i)}" for i in range(6)} <= calls[0]
    assert sorted(names(session, f"{word}*"))[:2] == ["vocab/batch0", "vocab/batch1"]


def test_tiers_of_a_complete_facet_pass_are_those_of_the_tier_queries(
    session: Session, world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: when the facet pass saw every match, each tier's matches are read from
    those rows (their keys looked up, the tier queries evaluated on them) instead of a GIN
    scan per tier: the same tiers, so the same pages, for words, phrases, weights, prefixes,
    filters and exclusions (SQLite: the same pages anyway)."""
    from store.search import postgres_fts

    make_repo(session, "tier/in-name", description="other words", pull_count=1)
    make_repo(
        session, "tier/body", description="A summary.\ntier in name, in memory", pull_count=10**5
    )
    queries = (
        "redis",
        "memory",
        '"in memory"',
        "in-mem",
        "tier name",
        "redis -compatible",
        "cache OR tower",
        "re",
        "tier",
        '"in name"',
    )

    def found() -> list[list[tuple[str, int]]]:
        return [
            [
                (h.doc.name, h.tier)
                for h in service.search(session, q=q, as_you_type=True, per_page=100).hits
            ]
            for q in queries
        ]

    monkeypatch.setattr(postgres_fts.PostgresBackend, "tiers_from_matches", False)
    expected = found()
    monkeypatch.setattr(postgres_fts.PostgresBackend, "tiers_from_matches", True)
    assert found() == expected
    tiers = dict(expected[queries.index("tier name")])
    assert tiers == {"tier/in-name": 3, "tier/body": 0}
    if session.get_bind().dialect.name == "postgresql":
        # The tier queries are not run: one statement reads the facet pass's rows.
        statements: list[str] = []

        def record(conn, cursor, statement, *args) -> None:
            statements.append(statement)

        from sqlalchemy import event

        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", record)
        try:
            service.search(session, q='"in memory"')
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert not [s for s in statements if "UNION ALL" in s and "search_fts_fields" in s]
        assert [s for s in statements if "id = ANY(" in s and "search_fts_fields" in s]
