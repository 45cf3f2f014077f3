"""Billing fixtures: a shop with paid tiers and the billing runtime on the app."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

import store.billing.models  # noqa: F401  (the billing tables are part of the metadata)
from store.accounts.models import Account, Organization
from store.billing.runtime import Billing, build_billing
from store.catalog.models import Product, Tier
from store.config import Settings
from tests.billing.helpers import billing_settings
from tests.billing.stripe_env import SECRET_KEY, LocalStripe
from tests.billing.stripe_env import WEBHOOK_SECRET as STRIPE_WEBHOOK_SECRET
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier, tier_of


def install_routes(app: FastAPI) -> None:
    """Until store/app.py includes the billing routers, add them here (once)."""
    paths = {getattr(route, "path", "") for route in app.router.routes}
    if "/billing/stripe/webhook" in paths:
        return
    from store.billing.webhook_api import router as webhook_router

    app.include_router(webhook_router)
    for name, prefix in (("store.billing.api", "/api/v1"), ("store.web.routes_billing", "")):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        app.include_router(module.router, prefix=prefix)


@pytest.fixture
def billing(app: FastAPI, settings: Settings) -> Billing:
    install_routes(app)
    runtime = build_billing(billing_settings(), settings)
    app.state.billing = runtime
    return runtime


@dataclass
class Shop:
    admin: Account
    publisher: Account
    org: Organization
    product: Product
    buyer: Account
    one_time: Tier
    monthly: Tier
    trial: Tier


@pytest.fixture
def shop(session: Session) -> Shop:
    admin = make_admin(session, f"admin-{uuid.uuid4().hex[:6]}")
    publisher = make_account(session)
    org = make_org(session, publisher)
    product = make_product(
        session,
        org,
        publisher,
        tiers=[
            paid_tier("lifetime", 9900, "one_time"),
            paid_tier("pro", 4900, "month"),
            paid_tier("team", 49000, "year", trial_days=14),
        ],
    )
    buyer = make_account(session)
    return Shop(
        admin=admin,
        publisher=publisher,
        org=org,
        product=product,
        buyer=buyer,
        one_time=tier_of(product, "lifetime"),
        monthly=tier_of(product, "pro"),
        trial=tier_of(product, "team"),
    )


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    server = LocalStripe()
    yield server
    server.stop()


@pytest.fixture
def stripe_billing(app: FastAPI, settings: Settings, localstripe: LocalStripe) -> Billing:
    """The app's billing on the Stripe gateway, talking to a flushed localstripe."""
    localstripe.flush()
    install_routes(app)
    runtime = build_billing(
        billing_settings(
            gateway="stripe",
            stripe_secret_key=SECRET_KEY,
            stripe_publishable_key="pk_test_store_billing",
            stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
            stripe_api_base=localstripe.base,
        ),
        settings,
    )
    app.state.billing = runtime
    return runtime
