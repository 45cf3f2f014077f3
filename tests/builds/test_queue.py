"""The build queue on SQLite and PostgreSQL with real concurrent claimers (a database of
its own: claims commit in transactions of their own, as in worker processes): no build is
ever claimed twice, the per-namespace limit holds, stopped workers' builds fail, and the
build credential is accepted by the token endpoint only while its build runs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from store.builds import queue
from store.builds.models import Build
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.registry import hub
from store.registry.models import HubRepository
from tests import pg


@pytest.fixture(scope="module")
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pg.migrated_database(backend, tmp_path_factory.mktemp("builds-db"), "builds") as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    with engine.begin() as conn:
        conn.execute(delete(Build))
        conn.execute(delete(HubRepository))
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def builds_settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret-key-0123456789",
        environment="test",
        builds_per_namespace=2,
    )


def _queue(factory: sessionmaker[Session], names: list[str]) -> list[uuid.UUID]:
    ids = []
    with session_scope(factory) as session:
        start = utcnow()
        for n, name in enumerate(names):
            repo = hub.ensure_repository(session, name)
            build = Build(
                repository_id=repo.id,
                repository=name,
                namespace=repo.namespace,
                source_url="https://git.example.com/x.git",
                ref="refs/heads/main",
                docker_tag="latest",
                dockerfile="Dockerfile",
                context=".",
                build_args={},
                trigger="manual",
                status="queued",
                queued_at=start + timedelta(microseconds=n),
                timeout_seconds=60,
                cancel_requested=False,
                worker="",
                error="",
                log_size=0,
            )
            session.add(build)
            session.flush()
            ids.append(build.id)
    return ids


def _claim_all(
    factory: sessionmaker[Session], settings: Settings, threads: int
) -> list[queue.Claimed]:
    claims: list[queue.Claimed] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            start.wait()
            while (claimed := queue.claim(factory, settings, worker=f"w{n}")) is not None:
                with lock:
                    claims.append(claimed)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    return claims


def test_concurrent_claims_take_each_build_once(
    factory: sessionmaker[Session], builds_settings: Settings
) -> None:
    names = [f"ns{n % 8}/app{n}" for n in range(16)]  # 8 namespaces, 2 builds each
    ids = _queue(factory, names)
    claims = _claim_all(factory, builds_settings, threads=4)
    assert sorted(c.build_id for c in claims) == sorted(ids)
    assert len({c.token for c in claims}) == len(claims)
    with factory() as session:
        rows = session.scalars(select(Build)).all()
        assert {b.status for b in rows} == {"running"}
        assert all(b.claim_token and b.worker for b in rows)


def test_namespace_limit_holds_under_concurrency(
    factory: sessionmaker[Session], builds_settings: Settings
) -> None:
    _queue(factory, [f"busy/app{n}" for n in range(6)] + ["calm/app"])
    claims = _claim_all(factory, builds_settings, threads=4)
    # two of busy's (the limit) and calm's one; the rest wait for a free slot
    assert sorted(c.namespace for c in claims) == ["busy", "busy", "calm"]
    assert queue.finish(factory, claims[0], status="succeeded", digest="sha256:" + "0" * 64)
    assert not queue.finish(factory, claims[0], status="failed")  # the claim is spent
    more = queue.claim(factory, builds_settings, worker="w9")
    assert more is not None and more.namespace == claims[0].namespace
    assert queue.claim(factory, builds_settings, worker="w9") is None


def test_log_heartbeat_cancel_and_lapsed_workers(
    factory: sessionmaker[Session], builds_settings: Settings
) -> None:
    assert not queue.work_exists(factory)  # idle workers only read
    first, second = _queue(factory, ["acme/one", "acme/two"])
    assert queue.work_exists(factory)
    claimed = queue.claim(factory, builds_settings, worker="w1")
    assert claimed is not None and claimed.build_id == first
    writer = queue.LogWriter(factory, claimed)
    writer.write("step 1\n")
    writer.flush()
    writer.write("step 2\n")
    writer.flush()
    with factory() as session:
        from store.builds import service

        assert service.read_log(session, first).text == "step 1\nstep 2\n"
        assert service.read_log(session, first, after=0).text == "step 2\n"
        session.execute(update(Build).where(Build.id == first).values(cancel_requested=True))
        session.commit()
    writer.flush()
    assert writer.canceled and not writer.lost
    # a second worker that stopped: its heartbeat gets old, the next claim fails its build
    other = queue.claim(factory, builds_settings, worker="w2")
    assert other is not None and other.build_id == second
    with session_scope(factory) as session:
        session.execute(
            update(Build)
            .where(Build.id == second)
            .values(heartbeat_at=utcnow() - queue.HEARTBEAT_LAPSE - timedelta(seconds=1))
        )
    assert queue.work_exists(factory)  # the stopped worker's build, to be failed
    assert queue.claim(factory, builds_settings, worker="w3") is None
    assert not queue.work_exists(factory)
    with factory() as session:
        lapsed = session.get(Build, second)
        assert lapsed is not None and lapsed.status == "failed"
        assert "stopped" in lapsed.error
    late = queue.LogWriter(factory, other)
    late.write("too late\n")
    late.flush()
    assert late.lost


def test_build_credential(builds_settings: Settings) -> None:
    build_id = uuid.uuid4()
    now = time.time()
    expires = int(now) + 60
    username, password = queue.credential(builds_settings, build_id, expires=expires)
    assert username == "_store-build"
    assert queue.check_credential(builds_settings, password, now=now) == (build_id, expires)
    assert queue.check_credential(builds_settings, password, now=now + 61) is None
    forged = password.rsplit(".", 1)[0] + "." + "0" * 64
    assert queue.check_credential(builds_settings, forged, now=now) is None
    longer = password.replace(f".{int(now) + 60}.", f".{int(now) + 6000}.")
    assert queue.check_credential(builds_settings, longer, now=now) is None
    other = Settings(
        data_dir=builds_settings.data_dir,
        secret_key="another-secret-0123456789",
        environment="test",
    )
    assert queue.check_credential(other, password, now=now) is None
