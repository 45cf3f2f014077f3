"""`store mail digests` in two processes at the same moment, on SQLite and on PostgreSQL:
each person who chose the daily digest gets one, telling every sale of the day once; a
third run queues nothing. And two digests of the same person held until both have passed
every check, then let go together: one is queued, the other tells nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from store import PROJECT_DIR, migrate
from store.accounts import service as accounts
from store.billing import orders, sale_notices
from store.billing.models import SaleNotice, SaleNoticePreference
from store.billing.runtime import build_billing
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.mail.models import OutboxMessage
from tests.billing.helpers import billing_settings
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier, tier_of
from tests.pg import PG_URL, scratch_database

PEOPLE = 12  # finance members who chose the digest
SALES = 5  # paid yesterday

pytestmark = [pytest.mark.e2e]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'store.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url, data_dir
        return
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database("digests", migrated=True) as url:
        yield url, data_dir


def _shop(url: str) -> None:
    engine = make_engine(url)
    settings = Settings(environment="test", public_url="http://store.test")
    billing = build_billing(billing_settings(), settings)
    yesterday = utcnow().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    with session_scope(make_sessionmaker(engine)) as session:
        owner, admin = make_account(session), make_admin(session)
        org = make_org(session, owner)
        product = make_product(session, org, owner, tiers=[paid_tier("pro", 2500, "one_time")])
        for _ in range(PEOPLE):
            person = make_account(session)
            accounts.add_member(session, org=org, actor=admin, account=person, role="finance")
            sale_notices.choose(session, account=person, organization=org.slug, mode="daily")
        for pref in session.scalars(select(SaleNoticePreference)):
            pref.since = yesterday - timedelta(days=2)
        for n in range(SALES):
            order = orders.start_checkout(
                session, billing, account=make_account(session), tier=tier_of(product, "pro")
            )
            order.status, order.paid_at = "paid", yesterday + timedelta(minutes=n)
    engine.dispose()


def _run_together(url: str, data_dir: Path, count: int) -> list[dict[str, int]]:
    env = {
        **os.environ,
        "STORE_DATABASE_URL": url,
        "STORE_DATA_DIR": str(data_dir),
        "STORE_SECRET_KEY": "digest-processes-secret-0123456789",
        "STORE_PUBLIC_URL": "http://store.test",
        "PYTHONPATH": str(PROJECT_DIR),
    }
    argv = [sys.executable, "-m", "store.cli.main", "mail", "digests", "--json"]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_two_digest_runs_at_once_send_one_digest_a_person(database: tuple[str, Path]) -> None:
    url, data_dir = database
    _shop(url)
    results = _run_together(url, data_dir, 2)
    assert sum(r["digests"] for r in results) == PEOPLE, results
    assert sum(r["sales"] for r in results) == PEOPLE * SALES, results
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            subjects = conn.scalars(
                select(OutboxMessage.subject).where(OutboxMessage.template == "sales_digest")
            ).all()
            told = conn.scalar(select(func.count()).select_from(SaleNotice))
            alone = conn.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.template == "new_sale")
            )
        assert len(subjects) == PEOPLE and all(s.endswith(f": {SALES}") for s in subjects)
        assert told == PEOPLE * SALES and alone == 0
        # run again (the timer's next round): nothing more
        [again] = _run_together(url, data_dir, 1)
        assert again["digests"] == 0 and again["sales"] == 0
    finally:
        engine.dispose()


def test_two_digests_past_their_checks_at_once_tell_the_sales_once(
    database: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, data_dir = database
    _shop(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    settings = Settings(
        environment="test", public_url="http://store.test", data_dir=data_dir,
        secret_key="digest-processes-secret-0123456789",
    )  # fmt: skip
    # Both runs have found the digest not sent and the sales untold; they claim together.
    # (SQLite lets one writer in at a time: the second waits out the barrier, then sees
    # the first one's commit.)
    barrier = threading.Barrier(2, timeout=5)
    original = sale_notices._claim

    waited_out: list[bool] = []

    def claim_together(*args: object, **kwargs: object) -> set[object]:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            waited_out.append(True)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sale_notices, "_claim", claim_together)
    with session_scope(factory) as session:
        account_id, organization_id = sale_notices.digest_recipients(session)[0]
    told: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with session_scope(factory) as session:
                told.append(
                    sale_notices.send_digest(
                        session, settings, account_id=account_id,
                        organization_id=organization_id,
                    )
                )  # fmt: skip
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors, errors
        if url.startswith("postgresql"):
            assert not waited_out  # both really claimed at the same moment
        assert sorted(told) == [0, SALES]
        with engine.connect() as conn:
            digests = conn.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    OutboxMessage.template == "sales_digest",
                    OutboxMessage.account_id == account_id,
                )
            )
            rows = conn.scalar(
                select(func.count())
                .select_from(SaleNotice)
                .where(SaleNotice.account_id == account_id)
            )
        assert digests == 1 and rows == SALES
    finally:
        engine.dispose()
