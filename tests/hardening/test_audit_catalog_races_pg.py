"""The same catalog row made twice at the same instant, on PostgreSQL (separate connections;
the first transaction is held open while the second runs, as a double click or a retried
request does): the second gets the error a later attempt gets (409 with a stable code), or,
for a category both name, the one the first made; never a 500. A free tier's billing
changed while its first customer gets it: the change is refused (the tier has a customer),
or, when the change comes first, the tier is no longer got for free.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from store.accounts.models import Account, Organization
from store.catalog import service as catalog
from store.catalog.models import Category, Product, Tier
from store.errors import StoreError
from store.licensing import entitlements
from store.licensing.models import Entitlement
from tests.factories import make_account, make_org, make_product
from tests.pg import scratch_sessions


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    with scratch_sessions("catalog_races") as sessions:
        yield sessions


@pytest.fixture
def ids(factory: sessionmaker[Session]) -> dict[str, uuid.UUID]:
    with factory() as session:
        alice = make_account(session, "alice")
        acme = make_org(session, alice, "acme")
        product = make_product(session, acme, alice, "app")
        session.commit()
        return {"alice": alice.id, "acme": acme.id, "product": product.id}


def _waiting_or_done(factory: sessionmaker[Session], done: threading.Event) -> None:
    """Until the other transaction finished or waits for a lock (bounded)."""
    with factory() as probe:
        for _ in range(400):
            if done.is_set():
                return
            waiting = probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            probe.rollback()
            if waiting:
                return
            time.sleep(0.025)
    pytest.fail("the other transaction neither finished nor waited for a lock")


def _twice(factory: sessionmaker[Session], make: Callable[[Session], object]) -> str:
    """``make`` in one transaction held open, and again in a second one meanwhile; how the
    second ended (``ok`` or the error's code)."""
    outcome: list[str] = []
    done = threading.Event()

    def run() -> None:
        with factory() as session:
            try:
                make(session)
                session.commit()
                outcome.append("ok")
            except StoreError as exc:
                session.rollback()
                outcome.append(exc.code or type(exc).__name__)
            finally:
                done.set()

    with factory() as first:
        make(first)
        thread = threading.Thread(target=run)
        thread.start()
        _waiting_or_done(factory, done)
        first.commit()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0]


def _count(factory: sessionmaker[Session], model: type, *where: object) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_the_same_product_created_twice_at_once(
    factory: sessionmaker[Session], ids: dict[str, uuid.UUID]
) -> None:
    def create(session: Session) -> object:
        return catalog.create_product(
            session,
            actor=session.get_one(Account, ids["alice"]),
            org=session.get_one(Organization, ids["acme"]),
            kind="image",
            slug="twice",
            title="Twice",
        )

    assert _twice(factory, create) == "repository_taken"
    assert _count(factory, Product, Product.repository == "acme/twice") == 1


def test_the_same_tier_created_twice_at_once(
    factory: sessionmaker[Session], ids: dict[str, uuid.UUID]
) -> None:
    def create(session: Session) -> object:
        return catalog.create_tier(
            session,
            actor=session.get_one(Account, ids["alice"]),
            product=session.get_one(Product, ids["product"]),
            slug="team",
        )

    assert _twice(factory, create) == "tier_taken"
    assert _count(factory, Tier, Tier.product_id == ids["product"], Tier.slug == "team") == 1


def test_a_new_category_named_by_two_edits_at_once(
    factory: sessionmaker[Session], ids: dict[str, uuid.UUID]
) -> None:
    def categorise(session: Session) -> object:
        return catalog.update_product(
            session,
            actor=session.get_one(Account, ids["alice"]),
            product=session.get_one(Product, ids["product"]),
            categories=["brand-new"],
        )

    assert _twice(factory, categorise) == "ok"
    assert _count(factory, Category, Category.slug == "brand-new") == 1
    with factory() as session:
        product = session.get_one(Product, ids["product"])
        assert [c.slug for c in product.categories] == ["brand-new"]


def _free_tier_world(factory: sessionmaker[Session]) -> dict[str, uuid.UUID]:
    with factory() as session:
        alice = make_account(session, "alice")
        acme = make_org(session, alice, "acme")
        product = make_product(session, acme, alice, "app")
        bob = make_account(session, "bob")
        session.commit()
        tier = catalog.get_tier_by_slug(session, product, "free")
        return {"alice": alice.id, "bob": bob.id, "tier": tier.id}


def _get(ids: dict[str, uuid.UUID]) -> Callable[[Session], object]:
    def run(session: Session) -> object:
        return entitlements.get_free_tier(
            session,
            account=session.get_one(Account, ids["bob"]),
            tier=session.get_one(Tier, ids["tier"]),
        )

    return run


def _charge_monthly(ids: dict[str, uuid.UUID]) -> Callable[[Session], object]:
    def run(session: Session) -> object:
        return catalog.update_tier(
            session,
            actor=session.get_one(Account, ids["alice"]),
            tier=session.get_one(Tier, ids["tier"]),
            billing="month",
            amount_minor=900,
        )

    return run


def _held_then(
    factory: sessionmaker[Session],
    first: Callable[[Session], object],
    other: Callable[[Session], object],
    read: uuid.UUID,
) -> str:
    """``first`` held open while ``other`` runs in a transaction that read the tier first."""
    outcome: list[str] = []
    done = threading.Event()

    def run() -> None:
        with factory() as session:
            try:
                session.get_one(Tier, read)  # read before the first commits
                other(session)
                session.commit()
                outcome.append("ok")
            except StoreError as exc:
                session.rollback()
                outcome.append(exc.code or type(exc).__name__)
            finally:
                done.set()

    with factory() as holding:
        first(holding)
        thread = threading.Thread(target=run)
        thread.start()
        _waiting_or_done(factory, done)
        holding.commit()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0]


def test_a_tier_s_billing_does_not_change_under_its_first_customer(
    factory: sessionmaker[Session],
) -> None:
    """The billing of a tier with customers cannot change: nor while the first one gets it."""
    ids = _free_tier_world(factory)
    assert _held_then(factory, _get(ids), _charge_monthly(ids), ids["tier"]) == "tier_has_customers"
    with factory() as session:
        assert session.get_one(Tier, ids["tier"]).is_free


def test_a_tier_made_paid_is_not_got_for_free_at_that_instant(
    factory: sessionmaker[Session],
) -> None:
    ids = _free_tier_world(factory)
    assert _held_then(factory, _charge_monthly(ids), _get(ids), ids["tier"]) == "tier_not_free"
    with factory() as session:
        assert _count(factory, Entitlement) == 0
        assert not session.get_one(Tier, ids["tier"]).is_free
