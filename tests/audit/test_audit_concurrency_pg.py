"""Appends from several connections at once on PostgreSQL still form one unbroken chain."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from store import migrate
from store.audit import service as audit
from store.audit.models import AuditEvent
from store.db import make_engine, make_sessionmaker, session_scope

PG_URL = os.environ.get("STORE_TEST_DATABASE_URL", "")
pytestmark = pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)")

WRITERS, EACH = 4, 15


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    base = make_url(PG_URL)
    if base.drivername == "postgresql":
        base = base.set(drivername="postgresql+psycopg")
    name = f"store_audit_conc_{os.getpid()}"
    admin = make_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_concurrent_appends_form_one_chain(pg_url: str) -> None:
    engine = make_engine(pg_url)
    factory = make_sessionmaker(engine)
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(EACH):
                with session_scope(factory) as session:  # one transaction per event
                    audit.record(session, action="test.concurrent", details={"w": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors, errors
        with factory() as session:
            assert session.scalar(select(func.count(AuditEvent.id))) == WRITERS * EACH
            report = audit.verify_chain(session)
            assert report.ok and report.count == WRITERS * EACH, report
    finally:
        engine.dispose()
