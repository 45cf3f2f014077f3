"""Pull notifications: a few plain statements each, every pull counted once however the
registry delivers (again, out of order, to several processes at once), and the counts in
search within about a second."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from store import migrate
from store.db import make_engine, make_sessionmaker, session_scope
from store.idempotency import ProcessedEvent
from store.registry import events, hub
from store.registry.models import HubRepository, ManifestPull, PullCounter
from store.registry.pull_search import PullSearch
from store.search.models import SearchDocument
from tests import pg
from tests.search.helpers import make_repo

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def _pull(
    repo: str, *, media: str = MANIFEST, client: str = "10.0.0.1:1", at: str = "10"
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "timestamp": f"2026-11-28T17:42:{at}.5Z",
        "action": "pull",
        "target": {"repository": repo, "mediaType": media, "digest": "sha256:" + "c" * 64},
        "request": {"method": "GET", "addr": client, "useragent": "skopeo/1.9.3"},
        "actor": {"name": "bob"},
    }


def test_a_pull_notification_is_a_few_plain_statements(session: Session) -> None:
    make_repo(session, "acme/lean")
    session.commit()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if not sql.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            statements.append(sql)

    bind = session.connection().engine
    event.listen(bind, "before_cursor_execute", seen)
    try:
        outcome = events.process(session, {"events": [_pull("acme/lean")]}, defer_search=True)
    finally:
        event.remove(bind, "before_cursor_execute", seen)
    assert outcome.processed == 1 and len(outcome.pulled) == 1
    # processed-event insert (returning the repository's id too), old downloads deleted
    # (once a minute per repository and process), then on SQLite the pairing update, the
    # download insert, the total and the day; on PostgreSQL the pairing lock and one
    # statement for those four. No ORM flush, no savepoint, no search rewrite.
    postgresql = session.connection().dialect.name == "postgresql"
    assert len(statements) <= (4 if postgresql else 6), statements
    assert not any(s.lstrip().upper().startswith("SELECT HUB") for s in statements)
    assert not any("search_documents" in s for s in statements)
    repo = hub.get_repository(session, "acme/lean")
    assert repo is not None and repo.pull_count == 1


def test_a_pull_of_a_repository_the_hub_has_not_seen_creates_and_counts_it(
    session: Session,
) -> None:
    outcome = events.process(session, {"events": [_pull("acme/unseen")]}, defer_search=True)
    assert outcome.processed == 1
    repo = hub.get_repository(session, "acme/unseen")
    assert repo is not None and repo.pull_count == 1 and outcome.pulled == {repo.id}
    again = events.process(session, {"events": [_pull("acme/unseen")]}, defer_search=True)
    assert again.pulled == {repo.id}
    session.refresh(repo)
    assert repo.pull_count == 2


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database of its own, committed to for real (several connections, threads)."""
    if request.param == "postgresql":
        if not pg.PG_URL:
            pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
        with pg.scratch_database("pulls", migrated=True) as url:
            engine = make_engine(url)
            yield engine
            engine.dispose()
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'pulls.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _together(jobs: list[tuple[Engine, dict[str, Any]]]) -> list[Any]:
    """Each envelope to its engine (one per "process"), all started at once."""
    barrier = threading.Barrier(len(jobs))
    outcomes: list[Any] = []
    errors: list[BaseException] = []

    def deliver(engine: Engine, envelope: dict[str, Any]) -> None:
        factory = make_sessionmaker(engine)
        barrier.wait()
        try:
            with session_scope(factory) as session:
                outcomes.append(events.process(session, envelope, defer_search=True))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return outcomes


def _count(engine: Engine, name: str) -> tuple[int, int]:
    with engine.connect() as conn:
        total = conn.scalar(select(HubRepository.pull_count).where(HubRepository.name == name))
        days = conn.scalar(
            select(func.coalesce(func.sum(PullCounter.count), 0))
            .join(HubRepository, HubRepository.id == PullCounter.repository_id)
            .where(HubRepository.name == name)
        )
    return int(total or 0), int(days or 0)


def test_redeliveries_to_several_processes_at_once_count_once(fresh_engine: Engine) -> None:
    with session_scope(make_sessionmaker(fresh_engine)) as session:
        make_repo(session, "acme/once")
    url = fresh_engine.url.render_as_string(hide_password=False)
    others = [make_engine(url) for _ in range(2)]
    try:
        engines = [fresh_engine, *others]
        pulls = [_pull("acme/once", client=f"10.0.0.{i}:1") for i in range(4)]
        envelope = {"events": pulls}
        # the same envelope to three processes at once, and a single event again
        outcomes = _together([(e, envelope) for e in engines])
        assert sum(o.processed for o in outcomes) == 4
        assert sum(o.duplicates for o in outcomes) == 8
        outcomes = _together([(e, {"events": [pulls[0]]}) for e in engines])
        assert sum(o.processed for o in outcomes) == 0
        assert _count(fresh_engine, "acme/once") == (4, 4)
        with fresh_engine.connect() as conn:
            recorded = conn.scalar(
                select(func.count())
                .select_from(ProcessedEvent)
                .where(ProcessedEvent.event_id.in_([p["id"] for p in pulls]))
            )
        assert recorded == 4
    finally:
        for engine in others:
            engine.dispose()


def test_an_index_and_its_manifest_at_two_processes_at_once_are_one_pull(
    fresh_engine: Engine,
) -> None:
    with session_scope(make_sessionmaker(fresh_engine)) as session:
        make_repo(session, "acme/multi")
    url = fresh_engine.url.render_as_string(hide_password=False)
    other = make_engine(url)
    try:
        rounds = 6
        for i in range(rounds):
            client = f"10.1.0.{i}:1"
            index = {"events": [_pull("acme/multi", media=INDEX, client=client)]}
            manifest = {"events": [_pull("acme/multi", client=client.replace(":1", ":2"))]}
            # the index to one process, the platform manifest to the other, at once
            _together([(fresh_engine, index), (other, manifest)])
        assert _count(fresh_engine, "acme/multi") == (rounds, rounds)
    finally:
        other.dispose()


def test_one_clients_two_multi_arch_pulls_at_four_processes_at_once_are_two(
    fresh_engine: Engine,
) -> None:
    """Two indexes and two platform manifests of one client, each to a process of its own
    at once: each download pairs with at most one of the other kind, so two pulls."""
    with session_scope(make_sessionmaker(fresh_engine)) as session:
        make_repo(session, "acme/twice")
    url = fresh_engine.url.render_as_string(hide_password=False)
    others = [make_engine(url) for _ in range(3)]
    try:
        engines = [fresh_engine, *others]
        for i in range(3):
            client = f"10.2.0.{i}:1"
            media = [INDEX, MANIFEST, INDEX, MANIFEST]
            envelopes = [{"events": [_pull("acme/twice", media=m, client=client)]} for m in media]
            outcomes = _together(list(zip(engines, envelopes, strict=True)))
            assert sum(o.processed for o in outcomes) == 4
        assert _count(fresh_engine, "acme/twice") == (6, 6)
        with fresh_engine.connect() as conn:
            paired = conn.scalar(
                select(func.count()).select_from(ManifestPull).where(ManifestPull.paired)
            )
        assert paired == 12  # every download of the twelve paired with one of the other kind
    finally:
        for engine in others:
            engine.dispose()


def _searched_pulls(engine: Engine, name: str) -> int | None:
    with engine.connect() as conn:
        return conn.scalar(
            select(SearchDocument.pull_count).where(
                SearchDocument.source == "hub", SearchDocument.name == name
            )
        )


def test_pull_counts_reach_search_in_one_batch_within_the_interval(
    fresh_engine: Engine,
) -> None:
    factory = make_sessionmaker(fresh_engine)
    with session_scope(factory) as session:
        make_repo(session, "acme/searched", description="searched thing")
    assert _searched_pulls(fresh_engine, "acme/searched") == 0
    batches: list[int] = []
    later = PullSearch(lambda: factory, interval=0.3)
    original = later.flush

    # The five notifications are all in before the first refresh may run, however slowly
    # a loaded machine processes them (the interval starts at the first one).
    marked = threading.Event()

    def counting_flush() -> int:
        marked.wait(30)
        n = original()
        if n:
            batches.append(n)
        return n

    later.flush = counting_flush  # type: ignore[method-assign]
    try:
        for _ in range(5):
            with session_scope(factory) as session:
                outcome = events.process(
                    session, {"events": [_pull("acme/searched")]}, defer_search=True
                )
            later.mark(outcome.pulled)
        assert _searched_pulls(fresh_engine, "acme/searched") == 0  # not yet
        started = time.monotonic()
        marked.set()
        while _searched_pulls(fresh_engine, "acme/searched") != 5:
            assert time.monotonic() - started < 5, "search did not catch up"
            time.sleep(0.05)
        assert time.monotonic() - started < 0.3 + 2  # the interval plus one refresh
        assert batches == [1]  # five pulls, one repository, one refresh
        # What is pending when the process stops is refreshed on the way out.
        with session_scope(factory) as session:
            outcome = events.process(
                session, {"events": [_pull("acme/searched")]}, defer_search=True
            )
        later.mark(outcome.pulled)
    finally:
        later.stop()
    assert _searched_pulls(fresh_engine, "acme/searched") == 6
    assert later.pending() == 0


def test_a_failed_refresh_is_tried_again(fresh_engine: Engine) -> None:
    factory = make_sessionmaker(fresh_engine)
    with session_scope(factory) as session:
        repo = make_repo(session, "acme/retry")
        repo_id = repo.id
    calls = {"n": 0}
    real = hub.refresh_search

    def flaky(session: Session, ids: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away")
        return real(session, ids)

    later = PullSearch(lambda: factory, interval=60)
    with session_scope(factory) as session:
        events.process(session, {"events": [_pull("acme/retry")]}, defer_search=True)
    try:
        hub.refresh_search = flaky  # type: ignore[assignment]
        later.mark([repo_id])
        with pytest.raises(RuntimeError):
            later.flush()
        assert later.pending() == 1  # kept for the next refresh
        assert later.flush() == 1
    finally:
        hub.refresh_search = real  # type: ignore[assignment]
        later.stop()
    assert _searched_pulls(fresh_engine, "acme/retry") == 1


def test_record_pull_counts_and_reindexes_at_once(session: Session) -> None:
    repo = make_repo(session, "acme/direct", description="direct thing")
    at = events.parse_time("2026-11-28T17:42:10Z")
    assert hub.record_pull(session, name="acme/direct", at=at) is True
    assert repo.pull_count == 1  # the loaded object sees the new count
    doc = session.scalar(
        select(SearchDocument).where(
            SearchDocument.source == "hub", SearchDocument.name == "acme/direct"
        )
    )
    assert doc is not None and doc.pull_count == 1
    # a repository the hub has not seen yet is created by its first pull
    assert hub.record_pull(session, name="acme/new-one", at=at) is True
    new = hub.get_repository(session, "acme/new-one")
    assert new is not None and new.pull_count == 1
