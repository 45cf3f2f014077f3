"""The browser tests' store, written with the services into its database before the server
starts: the demo catalog (`store demo seed`), pull counts (as the registry's notifications
would record them) and paid orders (as the test gateway records them).

Passwords are hashed with the test suite's cheap argon2 parameters (tests/conftest.py), so
logging in is quick; the server verifies them like any other hash."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.orm import Session

from store import demo, migrate
from store.accounts import service as accounts
from store.billing import orders
from store.billing.config import BillingSettings
from store.billing.gateway import PaymentInput
from store.billing.runtime import build_billing
from store.billing.test_gateway import CARD_SUCCESS
from store.catalog import service as catalog
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.registry import hub
from store.registry.models import PullCounter

# The publisher test creates this product; the registry saw pushes and pulls of the
# repository before it was listed, so its dashboard has a pulls chart to show.
PUBLISHER_ORG = "acme-e2e"
PUBLISHER_PRODUCT = "widget"
PULLED = ("northwind/pgvault", f"{PUBLISHER_ORG}/{PUBLISHER_PRODUCT}")
# Orders the customer of the demo (casey) paid for: one for the admin to refund, one that
# gives northwind a sales chart.
REFUND_PURCHASE = ("neuron-works/feature-store", "perpetual")
SALES_PURCHASE = ("northwind/blockstore-volume", "perpetual")


@dataclass(frozen=True)
class Seeded:
    refund_order_id: uuid.UUID
    sales_order_id: uuid.UUID
    pulls: dict[str, int]


def store(data_dir: Path, *, demo_password: str, registry_host: str) -> Seeded:
    """The schema, the demo catalog (as `store demo seed` loads it), and the extras."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        database_url=f"sqlite:///{(data_dir / 'store.db').resolve()}",
        environment="development",
    )
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        demo.seed(session, password=demo_password, registry_host=registry_host)
    billing = build_billing(BillingSettings(_env_file=None, gateway="test"), settings)  # type: ignore[call-arg]
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            pulls = _pulls(session)
        paid = []
        for repository, tier_slug in (REFUND_PURCHASE, SALES_PURCHASE):
            with session_scope(make_sessionmaker(engine)) as session:
                customer = accounts.get_account_by_username(session, "casey")
                product = catalog.get_product_by_repository(session, repository)
                tier = catalog.get_tier_by_slug(session, product, tier_slug)
                order = orders.start_checkout(session, billing, account=customer, tier=tier)
                session.commit()
                orders.pay(
                    session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS)
                )
                session.flush()
                assert order.status == "paid", order.status
                paid.append(order.id)
    finally:
        engine.dispose()
    return Seeded(refund_order_id=paid[0], sales_order_id=paid[1], pulls=pulls)


def _pulls(session: Session) -> dict[str, int]:
    """A month of pulls with a weekly rhythm, growing, so the chart has a shape. One pull goes
    through the registry-event path (creating the hub records); the daily counters are then
    written directly, which is quicker than hundreds of single events."""
    now = utcnow()
    totals = {}
    for n, repository in enumerate(PULLED):
        hub.record_pull(session, name=repository, at=now)
        repo = hub.get_repository(session, repository)
        assert repo is not None
        counts = {
            (now - timedelta(days=ago)).date(): (30 - ago) // 4
            + (3 if ago % 7 in (1, 2) else 0)
            + n
            for ago in range(30)
        }
        session.execute(delete(PullCounter).where(PullCounter.repository_id == repo.id))
        session.add_all(
            PullCounter(repository_id=repo.id, day=day, count=count)
            for day, count in counts.items()
        )
        repo.pull_count = totals[repository] = sum(counts.values())
    session.flush()
    return totals
