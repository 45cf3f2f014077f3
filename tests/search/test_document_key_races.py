"""Two writers that each write a search document at a key nobody holds yet (PostgreSQL).

The document writers lock documents that exist (tests/search/test_document_writers_race.py);
these are the writes no lock of an existing row covers:

- the first document of a row: two writers both find none and both insert it;
- a rank key taken on a collision: two documents whose natural key is held by a third
  probe upward (``indexer._free_key``) and pick the same free key, as an insert or as a
  move (the pull refresh).

The second writer waits for the first (pg_blocking_pids), the first commits, and the
second ends without an error with its change kept; the stored index is what a reindex
builds from the rows. On SQLite one transaction writes at a time: the same writes one after
the other give the same index (last test).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from store.db import make_sessionmaker, session_scope, utcnow
from store.registry import hub
from store.registry.models import HubRepository
from store.search import indexer
from store.search.models import SearchDocument
from tests.search.helpers import make_repo, stored_index
from tests.search.test_document_writers_race import assert_rebuilt, pg_engine, race

NAME = "acme/quartz"
HASH = 0x2_3456_789A_BCDE  # the top 50 bits of every colliding id below
CREATED = utcnow() - timedelta(days=1)


def _colliding_id(n: int) -> uuid.UUID:
    """Ids whose documents' natural rank keys are equal at equal rank (rank_key: the low
    50 bits of a key are the id's top 50)."""
    return uuid.UUID(int=(HASH << 78) | n)


@pytest.fixture
def pg() -> Iterator[Engine]:
    yield from pg_engine("keyrace")


# --- the first document of a row ----------------------------------------------------------


def _repo(session: Session) -> HubRepository:
    return session.scalars(select(HubRepository).where(HubRepository.name == NAME)).one()


def _stars(session: Session) -> None:
    """Listener: the repository starred."""
    _repo(session).star_count += 5
    session.flush()


def _pulls(session: Session) -> None:
    """The pull refresh (pulls counted before): a missing document is built in full."""
    hub.refresh_search(session, [_repo(session).id])


def _refresh(session: Session) -> None:
    """A writer that bypassed the ORM re-indexes the repository."""
    indexer.refresh(session, repositories=[_repo(session).id])


FIRST = {"stars": _stars, "pulls": _pulls, "refresh": _refresh}
PAIRS = [("stars", "pulls"), ("pulls", "stars"), ("pulls", "pulls"), ("refresh", "refresh")]


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_two_writers_of_a_missing_document_insert_it_once(pg: Engine, a: str, b: str) -> None:
    """The repository's document is missing (written around the index); A builds and
    inserts it and holds its transaction, B finds none and inserts it too: B waits for A,
    then writes over A's document (with B's change) instead of failing."""
    engine = pg
    with session_scope(make_sessionmaker(engine)) as session:
        make_repo(session, NAME, description="quartz crystal", pull_count=10)
    with engine.begin() as conn:
        conn.execute(
            update(HubRepository)
            .where(HubRepository.name == NAME)
            .values(pull_count=HubRepository.pull_count + 1000)
        )
        conn.execute(delete(SearchDocument).where(SearchDocument.name == NAME))
    race(engine, FIRST[a], FIRST[b])
    with engine.connect() as conn:
        doc = conn.execute(select(SearchDocument).where(SearchDocument.name == NAME)).one()
        repo = conn.execute(select(HubRepository).where(HubRepository.name == NAME)).one()
    assert (
        (doc.pull_count, doc.star_count)
        == (repo.pull_count, repo.star_count)
        == (
            1010,
            5 if "stars" in (a, b) else 0,
        )
    )
    assert_rebuilt(engine)


# --- a key taken on a collision -----------------------------------------------------------


def _holder(engine: Engine, pull_count: int) -> None:
    """The document that holds the natural key of the colliding ones at their rank."""
    with session_scope(make_sessionmaker(engine)) as session:
        make_repo(
            session, "acme/holder", id=_colliding_id(1), pull_count=pull_count, created_at=CREATED
        )


def _create(n: int) -> Callable[[Session], None]:
    def create(session: Session) -> None:
        make_repo(session, f"acme/probe{n}", id=_colliding_id(n), created_at=CREATED)

    return create


def _move(n: int) -> Callable[[Session], None]:
    def move(session: Session) -> None:
        hub.refresh_search(session, [_colliding_id(n)])

    return move


def _keys(engine: Engine) -> dict[uuid.UUID, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(SearchDocument.ref_id, SearchDocument.id)).all()
    return dict(rows)  # type: ignore[arg-type]


def test_two_new_documents_probing_from_one_collision_take_two_keys(pg: Engine) -> None:
    """Two repositories made at once whose documents' natural key is held: each probes
    upward, the second after the first has taken the next key."""
    engine = pg
    _holder(engine, pull_count=0)
    race(engine, _create(2), _create(3))
    keys = _keys(engine)
    natural = keys[_colliding_id(1)]
    assert sorted(keys[_colliding_id(n)] - natural for n in (2, 3)) == [1, 2]
    assert_rebuilt(engine)


def test_two_documents_moving_onto_one_collision_take_two_keys(pg: Engine) -> None:
    """Two repositories' pull counts raise their documents to the rank of a third whose key
    is their natural one: each pull refresh moves its document to a probed key, the second
    after the first has taken the next key."""
    engine = pg
    _holder(engine, pull_count=1000)
    for n in (2, 3):
        with session_scope(make_sessionmaker(engine)) as session:
            _create(n)(session)
    with engine.begin() as conn:
        conn.execute(
            update(HubRepository)
            .where(HubRepository.id.in_([_colliding_id(2), _colliding_id(3)]))
            .values(pull_count=1000)
        )
    before = _keys(engine)
    race(engine, _move(2), _move(3))
    keys = _keys(engine)
    natural = keys[_colliding_id(1)]
    assert before[_colliding_id(2)] != natural + 1  # they moved
    assert sorted(keys[_colliding_id(n)] - natural for n in (2, 3)) == [1, 2]
    assert_rebuilt(engine)


def test_colliding_documents_written_in_turn_take_the_next_keys(session: Session) -> None:
    """Every backend, one writer after the other (SQLite's writers always take turns): the
    holder keeps its key, the others take the next ones up, and a reindex agrees."""
    make_repo(session, "acme/holder", id=_colliding_id(1), created_at=CREATED)
    for n in (2, 3):
        _create(n)(session)
    indexer.write_pending(session)
    conn = session.connection()
    keys = dict(conn.execute(select(SearchDocument.ref_id, SearchDocument.id)).all())
    natural = keys[_colliding_id(1)]
    assert [keys[_colliding_id(n)] - natural for n in (2, 3)] == [1, 2]
    stored = stored_index(conn)
    indexer.reindex(conn)
    assert stored_index(conn) == stored
