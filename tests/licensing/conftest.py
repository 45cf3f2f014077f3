"""Fixtures for license tests: a shop with a paid tier, a customer's entitlement, a key ring."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store.accounts.models import Account
from store.catalog import service as catalog
from store.catalog.models import Product
from store.config import Settings
from store.db import utcnow
from store.keys.service import KeyRing
from store.licensing import entitlements
from store.licensing.models import Entitlement
from tests.factories import make_account, make_org, make_product, paid_tier


@dataclass
class Shop:
    owner: Account
    customer: Account
    product: Product
    entitlement: Entitlement


@pytest.fixture
def keyring(settings: Settings, session_factory: sessionmaker[Session]) -> KeyRing:
    return KeyRing(lambda: session_factory, settings.resolved_secret_key)


def make_shop(session: Session) -> Shop:
    """acme/redis-ha with a Pro tier (5 seats, two features) held by "customer" for 30 days."""
    owner = make_account(session, "lic-owner")
    org = make_org(session, owner, "acme", name="Acme Corp")
    product = make_product(
        session,
        org,
        owner,
        "redis-ha",
        title="Redis HA",
        tiers=[
            {"slug": "free", "billing": "free"},
            paid_tier("pro", name="Pro", seats=5, features=["sso", "backup"]),
        ],
    )
    customer = make_account(session, "customer", display_name="Cus Tomer")
    pro = catalog.get_tier_by_slug(session, product, "pro")
    entitlement = entitlements.create_entitlement(
        session,
        tier=pro,
        source="subscription",
        account=customer,
        starts_at=utcnow() - timedelta(days=1),
        ends_at=utcnow() + timedelta(days=30),
    )
    return Shop(owner, customer, product, entitlement)


@pytest.fixture
def shop(session: Session) -> Shop:
    return make_shop(session)
