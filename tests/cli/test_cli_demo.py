"""`store demo seed`: a realistic catalog, loaded idempotently."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store import demo
from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.catalog.models import Category, Product, Tier
from store.licensing.models import Entitlement
from tests.cli._support import Run

DEMO_PASSWORD = "demo password 123"


def _counts(db: Session) -> tuple[int, ...]:
    db.rollback()  # a fresh snapshot of what the CLI committed
    return tuple(
        db.scalar(select(func.count()).select_from(model)) or 0
        for model in (Account, Organization, Product, Tier, Category, Entitlement)
    )


def test_seed_loads_a_realistic_catalog(run: Run, db: Session) -> None:
    result = run("demo", "seed", "--password", DEMO_PASSWORD, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert len(data["products"]) >= 20
    assert data["created_products"] == data["products"]
    assert 3 <= len(data["organizations"]) <= 5
    roles = {a["role"] for a in data["accounts"]}
    assert {"administrator", "customer"} <= roles
    assert all(a["password"] == DEMO_PASSWORD for a in data["accounts"])

    products = list(db.scalars(select(Product)))
    assert len(products) >= 20
    assert Counter(p.status for p in products) == {"published": len(products) - 1, "draft": 1}
    assert {p.kind for p in products} == {"image", "plugin"}
    assert any(p.official for p in products) and any(p.certified for p in products)
    assert all(p.description_md and p.summary and p.platforms for p in products)
    categories = {c.slug for p in products for c in p.categories}
    assert {"databases", "monitoring", "security", "networking", "developer-tools", "storage",
            "machine-learning", "messaging", "web-servers"} <= categories  # fmt: skip
    tiers = list(db.scalars(select(Tier)))
    assert {t.billing for t in tiers} == {"free", "one_time", "month", "year"}
    assert any(t.trial_days for t in tiers) and any(t.seats for t in tiers)
    assert any(t.public for t in tiers)
    orgs = list(db.scalars(select(Organization)))
    assert 0 < sum(o.verified for o in orgs) < len(orgs)

    admin = accounts.authenticate(db, login=demo.ADMIN, password=DEMO_PASSWORD)
    assert admin.is_admin
    customer = accounts.get_account_by_username(db, demo.CUSTOMER)
    held = db.scalars(select(Entitlement).where(Entitlement.account_id == customer.id))
    assert {e.source for e in held} == {"free", "grant"}


def test_seeding_again_creates_nothing_new(run: Run, db: Session) -> None:
    before = _counts(db)
    result = run("demo", "seed", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["created_products"] == []
    assert data["created_organizations"] == []
    assert data["created_entitlements"] == 0
    assert all(a["created"] is False for a in data["accounts"])
    assert _counts(db) == before
    # Without --password a new one is made, and it is the one that works now.
    password = data["accounts"][0]["password"]
    assert password != DEMO_PASSWORD
    assert accounts.authenticate(db, login=demo.ADMIN, password=password).is_admin


def test_seed_prints_the_credentials(run: Run) -> None:
    result = run("demo", "seed", "--password", DEMO_PASSWORD)
    assert result.code == 0, result.err
    assert DEMO_PASSWORD in result.out
    assert demo.ADMIN in result.out
    assert "already there" in result.out
    assert "products" in result.out


def test_seed_never_takes_over_a_real_account(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("STORE_DATABASE_URL", url)
    # Someone registered a username the demo uses, with their own address.
    created = run("users", "create", "--username", demo.CUSTOMER, "--email", "real@example.com",
                  "--password", DEMO_PASSWORD)  # fmt: skip
    assert created.code == 0, created.err

    result = run("demo", "seed", "--password", "another password 1")
    assert result.code == 1
    assert "outside the demo" in result.err
    # One transaction: the accounts and products made before the conflict are gone too.
    assert [u["username"] for u in run("users", "list", "--json").json()] == [demo.CUSTOMER]
    assert run("products", "list", "--json").json() == []


def test_seed_refuses_a_production_store_unless_forced(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORE_ENVIRONMENT", "production")
    result = run("demo", "seed", "--password", DEMO_PASSWORD)
    assert result.code == 1
    assert "--force" in result.err
    assert run("demo", "seed", "--password", DEMO_PASSWORD, "--force").code == 0
