"""Two store processes on one PostgreSQL database, under concurrency and faults:

- concurrent purchases of one tier by one account (test gateway), through both processes:
  one entitlement per paid order, never more;
- the same registry events delivered to both processes at once: each acts once;
- every database connection cut (``pg_terminate_backend``) during load: requests fail
  cleanly or not at all, none hangs, and the processes recover without a restart;
- a registry notification retried after a store outage is absorbed once.

The shared PostgreSQL server is never restarted (others use it): a fresh database of this
test's own is created and dropped, and only its backends are terminated.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from store import PROJECT_DIR
from store.accounts import service as accounts
from store.billing.models import Order
from store.billing.test_gateway import CARD_SUCCESS
from store.db import make_engine, make_sessionmaker, session_scope
from store.idempotency import ProcessedEvent
from store.licensing.models import Entitlement
from store.registry.models import HubRepository
from tests import servers
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.pg import PG_URL, scratch_database, server_url

SECRET = "faults-test-secret-0123456789abcdef"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)"),
]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_database("faults", migrated=True) as url:
        yield url


class Store:
    """One uvicorn process of the store on a fixed loopback port (restartable)."""

    def __init__(self, database: str, data_dir: str) -> None:
        self.port = servers.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "STORE_DATABASE_URL": database,
            "STORE_DATA_DIR": data_dir,
            "STORE_SECRET_KEY": SECRET,
            "STORE_REGISTRY_NOTIFY_SECRET": "notify-secret",
            "STORE_BILLING_GATEWAY": "test",
            "STORE_BILLING_SWEEP_INTERVAL": "0",
            "PYTHONPATH": str(PROJECT_DIR),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    def start(self) -> None:
        self.log = open(os.path.join(self.env["STORE_DATA_DIR"], f"store-{self.port}.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            servers.uvicorn_argv("tests.billing.concurrency_app:make_app", self.port),
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        servers.wait_until_up(self.proc, f"{self.base}/api/v1/orgs", timeout=60)

    def stop(self) -> None:
        if self.proc is None:
            return
        servers.stop(self.proc, timeout=15)
        self.proc = None
        self.log.close()


@pytest.fixture(scope="module")
def stores(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Store]]:
    data_dir = str(tmp_path_factory.mktemp("faults"))
    pair = [Store(database, data_dir), Store(database, data_dir)]
    try:
        for store in pair:
            store.start()
        yield pair
    finally:
        for store in pair:
            store.stop()


@pytest.fixture(scope="module")
def world(database: str) -> dict[str, Any]:
    from store import security

    security.use_cheap_hashing_for_tests()
    engine = make_engine(database)
    with session_scope(make_sessionmaker(engine)) as session:
        owner = make_account(session)
        org = make_org(session, owner, "faults")
        product = make_product(
            session, org, owner, "app", tiers=[paid_tier("once", 1500, "one_time")]
        )
        buyer = make_account(session)
        token = accounts.create_token(
            session, kind="personal", name="t", scopes=["api", "pull"], created_by=buyer
        ).secret
        tier_id = str(tier_of(product, "once").id)
    engine.dispose()
    return {"token": token, "tier_id": tier_id, "buyer": buyer.username}


def _together(calls: list[Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except httpx.HTTPError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_purchases_of_one_tier_grant_once_per_paid_order(
    stores: list[Store], world: dict[str, Any], database: str
) -> None:
    headers = {"Authorization": f"Bearer {world['token']}"}
    body = {"tier_id": world["tier_id"], "card_number": CARD_SUCCESS}

    def buy(store: Store) -> Any:
        return lambda: httpx.post(
            f"{store.base}/api/v1/billing/checkout", json=body, headers=headers, timeout=30
        )

    responses = _together([buy(s) for s in stores for _ in range(3)])
    statuses = [r.status_code for r in responses]
    assert all(s < 500 for s in statuses), [r.text for r in responses]
    assert statuses.count(201) >= 1
    engine = make_engine(database)
    with engine.connect() as conn:
        paid = [str(o) for o in conn.scalars(select(Order.id).where(Order.status == "paid")).all()]
        for order_id in paid:
            count = conn.scalar(
                select(func.count())
                .select_from(Entitlement)
                .where(Entitlement.source_ref == order_id)
            )
            assert count == 1, order_id
        total = conn.scalar(select(func.count()).select_from(Entitlement))
    engine.dispose()
    assert total == len(paid)  # no entitlement without a paid order, none twice


def _pull_events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "timestamp": "2026-11-28T12:00:00Z",
            "action": "pull",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "repository": "faults/app",
                "digest": "sha256:" + "b" * 64,
                "tag": "1.0",
            },
            "request": {"method": "GET"},
        }
        for _ in range(n)
    ]


def _notify(store: Store, envelope: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{store.base}/registry/events",
        content=json.dumps(envelope),
        headers={
            "Authorization": "Bearer notify-secret",
            "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        },
        timeout=30,
    )


def _pulls(database: str) -> int:
    engine = make_engine(database)
    with engine.connect() as conn:
        count = conn.scalar(
            select(HubRepository.pull_count).where(HubRepository.name == "faults/app")
        )
    engine.dispose()
    return int(count or 0)


def test_duplicate_registry_events_to_both_processes_act_once(
    stores: list[Store], database: str
) -> None:
    before = _pulls(database)
    events = _pull_events(10)
    for event in events:
        envelope = {"events": [event]}
        responses = _together([lambda s=s, e=envelope: _notify(s, e) for s in stores])
        outcomes = [r.json() for r in responses]
        assert [r.status_code for r in responses] == [200, 200]
        assert sorted(o["processed"] for o in outcomes) == [0, 1], outcomes
    assert _pulls(database) == before + len(events)


def test_connections_cut_during_load_fail_cleanly_and_recover(
    stores: list[Store], world: dict[str, Any], database: str
) -> None:
    """Every backend of the store's database is terminated mid-load (what a database
    restart does to the pools): no request hangs, 5xx at most around the cut, and the same
    processes answer normally afterwards."""
    import base64

    basic = base64.b64encode(f"{world['buyer']}:{world['token']}".encode()).decode()
    requests = [
        ("/api/v1/orgs", {}),
        ("/api/v1/me", {"Authorization": f"Bearer {world['token']}"}),
        (
            # The buyer's own namespace: granted whatever the other tests bought.
            f"/token?service=store-registry&scope=repository:{world['buyer']}/tools:pull",
            {"Authorization": f"Basic {basic}"},
        ),
    ]
    results: list[tuple[float, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    def hammer(store: Store) -> None:
        with httpx.Client(base_url=store.base, timeout=15) as client:
            i = 0
            while not stop.is_set():
                path, headers = requests[i % len(requests)]
                i += 1
                try:
                    status = client.get(path, headers=headers).status_code
                except httpx.TimeoutException:
                    status = -1  # a hang: never acceptable
                except httpx.TransportError as exc:
                    status = -2
                    errors.append(f"{path}: {exc!r}")
                results.append((time.monotonic(), status))

    threads = [threading.Thread(target=hammer, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2)
    name = make_url(database).database
    admin = make_engine(server_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        cut_at = time.monotonic()
        killed = conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": name},
        )
    admin.dispose()
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert killed and killed > 0
    assert -1 not in [s for _, s in results], "a request hung"
    after = [s for at, s in results if at > cut_at + 2]
    assert after and all(s == 200 for s in after), (sorted(set(after)), errors)
    # Around the cut: a request on a connection that died answers 500 (uvicorn then closes
    # that keep-alive connection, so the client's next request there may be reset: -2).
    failures = [(at, s) for at, s in results if s != 200]
    assert all(s in (500, 503, -2) for _, s in failures), (failures, errors)
    assert all(cut_at - 1 < at < cut_at + 2 for at, _ in failures), failures
    assert len(failures) <= 4 * len(threads), f"{len(failures)} failed around the cut"


def test_registry_retry_after_a_store_outage_is_absorbed_once(
    stores: list[Store], database: str
) -> None:
    before = _pulls(database)
    envelope = {"events": _pull_events(1)}
    down = stores[0]
    down.stop()
    with pytest.raises(httpx.TransportError):  # the registry sees no answer and will retry
        _notify(down, envelope)
    down.start()
    first = _notify(down, envelope)  # the retry, once the store is back
    assert first.status_code == 200 and first.json()["processed"] == 1
    again = [_notify(s, envelope) for s in stores]  # retried again, to either process
    assert [r.json()["duplicates"] for r in again] == [1, 1]
    assert _pulls(database) == before + 1
    engine = make_engine(database)
    with engine.connect() as conn:
        count = conn.scalar(
            select(func.count())
            .select_from(ProcessedEvent)
            .where(ProcessedEvent.event_id == envelope["events"][0]["id"])
        )
    engine.dispose()
    assert count == 1
