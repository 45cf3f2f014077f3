"""Appends from several connections at once on PostgreSQL still form one unbroken chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from store.audit import service as audit
from store.audit.models import AuditEvent
from store.db import make_engine, make_sessionmaker, session_scope
from tests.pg import PG_URL, scratch_database

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)")

WRITERS, EACH = 4, 15


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with scratch_database("audit_conc", migrated=True) as url:
        yield url


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
