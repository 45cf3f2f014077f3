"""Migration 0006 on PostgreSQL: an index written before it is rebuilt into the two tables,
with the prefix lexemes the queries ask for, as the application writes them now but for the
2-character prefix lexemes it no longer writes and a summary the body starts with, which it
now indexes once in ``tsv``; the downgrade gives back the single table without them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import store.search  # noqa: F401  (installs the index listeners)
from store import migrate
from store.db import make_engine
from store.search import indexer, postgres_fts, service
from store.search.postgres_fts import tsvector_literals
from tests.pg import PG_URL, scratch_database
from tests.search.helpers import make_repo

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)")


@pytest.fixture
def fresh_engine() -> Iterator[Engine]:
    with scratch_database("search_mig") as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def _to(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = migrate.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _prefix_lexemes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM search_fts_terms, unnest(tsv) AS u "
                    "WHERE u.lexeme LIKE '*:%'"
                )
            )
        )


def _without_two(column: str) -> str:
    """The tsvector without its 2-character prefix lexemes ('*:re'), which 0006 wrote for
    the words of every field and the application writes for the words of names and titles
    only (migration 0770 replaces them)."""
    return (
        f"ts_delete({column}, ARRAY(SELECT lexeme FROM unnest({column}) "  # noqa: S608
        "WHERE lexeme LIKE '*:%' AND length(lexeme) = 4))"
    )


def _names(engine: Engine, q: str) -> list[str]:
    with Session(engine) as session:
        return [h.doc.name for h in service.search(session, q=q, as_you_type=True).hits]


def test_upgrade_indexes_prefixes_as_the_application_does(fresh_engine: Engine) -> None:
    migrate.upgrade(fresh_engine)
    with Session(fresh_engine) as session:
        make_repo(session, "acme/redis-ha", description="Replicated redis, it's «réplica» ready")
        make_repo(session, "acme/nginx", description="web server")
        session.commit()
    _to(fresh_engine, "0005", down=True)
    assert _prefix_lexemes(fresh_engine) == 0
    with fresh_engine.connect() as conn:
        columns = conn.scalars(
            text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'search_fts_terms' ORDER BY ordinal_position"
            )
        ).all()
        assert columns == ["id", "tags", "head", "mid", "tsv"]
        assert conn.scalar(text("SELECT to_regclass('search_fts_fields')")) is None

    _to(fresh_engine, "0006")
    assert _prefix_lexemes(fresh_engine) > 0
    with fresh_engine.connect() as conn:
        docs = conn.execute(
            text(
                "SELECT id, fts_name, fts_title, fts_summary, fts_body, fts_facets "
                "FROM search_documents"
            )
        ).mappings()
        for doc in docs:
            want = tsvector_literals(dict(doc))
            # 0006 indexes every summary in tsv, also one the body starts with (the
            # application now indexes that once; either form matches the same queries).
            both = postgres_fts._literal(dict(doc), postgres_fts._ANYWHERE, weighted=False)
            bands = [f"'{t}'" for t in postgres_fts.band_tokens(doc["id"])]
            want["tsv"] = " ".join([both, *bands])
            same = conn.execute(
                text(
                    "SELECT t.tags = CAST(:tags AS tsvector) "  # noqa: S608
                    f"AND {_without_two('t.tsv')} = {_without_two('CAST(:tsv AS tsvector)')} "
                    f"AND {_without_two('f.head')} = {_without_two('CAST(:head AS tsvector)')} "
                    f"AND {_without_two('f.mid')} = {_without_two('CAST(:mid AS tsvector)')} "
                    "FROM search_fts_terms AS t JOIN search_fts_fields AS f USING (id) "
                    "WHERE id = :id"
                ),
                {"id": doc["id"], **{k: want[k] for k in ("tags", "head", "mid", "tsv")}},
            ).scalar()
            assert same, doc["fts_name"]
    # Later migrations make hub repositories private unless marked public (0120, which
    # drops their documents until the next reindex): mark them public again and reindex.
    _to(fresh_engine, "heads")
    with fresh_engine.begin() as conn:
        conn.execute(text("UPDATE hub_repositories SET private = false, visibility = 'public'"))
        indexer.reindex(conn)
    assert _names(fresh_engine, "re") == ["acme/redis-ha"]
    assert _names(fresh_engine, "acme/ng") == ["acme/nginx"]
    assert _names(fresh_engine, "repl") == ["acme/redis-ha"]


def test_vocabulary_filled_from_the_index(fresh_engine: Engine) -> None:
    """Migration 0760 lists every word and 3-character prefix lexeme the index holds, so
    prefixes asked for as the lexemes they start find what they found before."""
    migrate.upgrade(fresh_engine)
    with Session(fresh_engine) as session:
        make_repo(session, "acme/redis-ha", description="Replicated redis, it's «réplica» ready")
        make_repo(session, "acme/redistore", description="web server")
        session.commit()
    _to(fresh_engine, "0750", down=True)
    with fresh_engine.connect() as conn:
        assert conn.scalar(text("SELECT to_regclass('search_fts_vocabulary')")) is None
    _to(fresh_engine, "0760")
    with fresh_engine.connect() as conn:
        listed = set(conn.scalars(text("SELECT lexeme FROM search_fts_vocabulary")))
        lexemes = set(
            conn.scalars(text("SELECT DISTINCT u.lexeme FROM search_fts_terms, unnest(tsv) AS u"))
        )
    assert {"redis", "redistore", "replica", "*:red", "*:rep"} <= listed
    assert listed == {x for x in lexemes if ":" not in x or x.startswith("*:")}
    assert sorted(_names(fresh_engine, "redis")) == ["acme/redis-ha", "acme/redistore"]
    assert _names(fresh_engine, "repl") == ["acme/redis-ha"]


def _stored(engine: Engine) -> dict[int, tuple[str, str, str, str]]:
    with engine.connect() as conn:
        return {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                text(
                    "SELECT id, CAST(t.tags AS text), CAST(t.tsv AS text), CAST(f.head AS text), "
                    "CAST(f.mid AS text) FROM search_fts_terms AS t "
                    "JOIN search_fts_fields AS f USING (id)"
                )
            )
        }


def test_head_prefixes_added_as_the_application_writes_them(fresh_engine: Engine) -> None:
    """Migration 0770 gives every row the 2-character prefix lexemes of its name and title
    words ('*:re', weighted in head), exactly as the application writes them: a
    2-character prefix then finds names and titles only; the downgrade takes them away."""
    migrate.upgrade(fresh_engine)
    with Session(fresh_engine) as session:
        make_repo(
            session,
            "acme/redis-ha",
            description="Replicated redis, it's «réplica» ready\nrelease notes and o'brien",
        )
        make_repo(session, "acme/nginx", description="web server, release builds")
        session.commit()
    with fresh_engine.begin() as conn:
        conn.execute(text("UPDATE hub_repositories SET private = false, visibility = 'public'"))
        indexer.reindex(conn)
    written = _stored(fresh_engine)
    assert any("'*:re':" in row[3] for row in written.values())
    _to(fresh_engine, "0751", down=True)
    with fresh_engine.connect() as conn:
        assert not conn.scalar(
            text(
                "SELECT count(*) FROM search_fts_fields, unnest(mid) AS u "
                "WHERE u.lexeme LIKE '*:%' AND length(u.lexeme) = 4"
            )
        )
    assert _names(fresh_engine, "re") == []  # not a word of any document
    _to(fresh_engine, "0770")
    assert _stored(fresh_engine) == written
    assert _names(fresh_engine, "re") == ["acme/redis-ha"]
    assert _names(fresh_engine, "ng") == ["acme/nginx"]
    assert _names(fresh_engine, "se") == []  # "server" is in a description only
