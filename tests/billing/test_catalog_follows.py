"""A catalog edit never waits on the payment gateway: it commits with the gateway down, and
the gateway is told afterwards (after the response, else by the sweep)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import subscriptions
from store.billing.gateway import GatewayError
from store.billing.models import TierPrice
from store.billing.runtime import Billing
from store.billing.test_gateway import TestGateway
from store.catalog.models import Tier
from tests.billing.conftest import Shop
from tests.billing.test_billing_follows_access import fresh, subscribe
from tests.factories import api_token, auth
from tests.web.helpers import HTML, login, submit


class DownGateway(TestGateway):
    """The test gateway, unreachable for prices and cancellations; counts the attempts."""

    __test__ = False

    def __init__(self) -> None:
        self.attempts = 0

    def _down(self) -> None:
        self.attempts += 1
        raise GatewayError("connection refused")

    def sync_price(self, session: Session, **kw: Any) -> str | None:
        self._down()
        return None

    def cancel_now(self, session: Session, billing: Billing, **kw: Any) -> Any:
        self._down()

    def set_cancel_at_period_end(self, session: Session, billing: Billing, **kw: Any) -> Any:
        self._down()


def down(app: FastAPI, billing: Billing) -> DownGateway:
    gateway = DownGateway()
    app.state.billing = Billing(settings=billing.settings, gateway=gateway)
    return gateway


def test_edits_commit_with_the_gateway_down_and_the_sweep_sends_them(
    app: FastAPI, client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    _, sub = subscribe(session, billing, shop)
    publisher = auth(api_token(session, shop.publisher))
    session.commit()
    gateway = down(app, billing)
    base = f"/api/v1/products/{shop.product.repository}"
    r = client.post(
        f"{base}/tiers",
        json={"slug": "max", "name": "Max", "billing": "month", "amount_minor": 9900},
        headers=publisher,
    )
    assert r.status_code == 201, r.text
    r = client.post(f"{base}/status", json={"status": "draft"}, headers=publisher)
    assert r.status_code == 200, r.text
    # Both edits committed; the follow-up after each response found the gateway down.
    assert gateway.attempts >= 2
    tier = session.scalars(select(Tier).where(Tier.product_id == shop.product.id)).all()
    new = next(t for t in tier if t.slug == "max")
    assert new.gateway_price_ref is None
    sub = fresh(session, sub)
    assert sub.end_requested == "period_end" and not sub.cancel_at_period_end
    # The gateway is back: the sweep makes the price and sends the cancellation.
    counts = subscriptions.expire_due(session, billing)
    session.commit()
    assert counts["priced"] >= 1 and counts["ended"] == 1
    new = fresh(session, new)
    assert new.gateway_price_ref is not None
    assert session.scalar(select(TierPrice).where(TierPrice.tier_id == new.id)) is not None
    assert fresh(session, sub).cancel_at_period_end


def test_published_again_while_the_gateway_is_down_is_lifted_by_the_sweep(
    app: FastAPI, client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    _, sub = subscribe(session, billing, shop)
    publisher = auth(api_token(session, shop.publisher))
    session.commit()
    url = f"/api/v1/products/{shop.product.repository}/status"
    assert client.post(url, json={"status": "draft"}, headers=publisher).status_code == 200
    sub = fresh(session, sub)
    assert sub.cancel_at_period_end and sub.end_reason == "unpublished"
    down(app, billing)
    assert client.post(url, json={"status": "published"}, headers=publisher).status_code == 200
    sub = fresh(session, sub)
    assert sub.cancel_at_period_end  # the gateway was not told yet
    subscriptions.expire_due(session, billing)
    session.commit()
    sub = fresh(session, sub)
    assert not sub.cancel_at_period_end and sub.end_requested is None


def test_the_page_edit_tells_the_gateway_after_its_response(
    app: FastAPI, client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    """The publisher's page: the tier's gateway price exists once the response is out."""
    client.headers.update(HTML)
    login(client, shop.publisher.username)
    page = f"/publish/{shop.product.repository}"
    r = submit(
        client,
        page,
        f"{page}/tiers",
        {"slug": "plus", "name": "Plus", "billing": "month", "price": "19.00", "currency": "usd"},
        follow_redirects=False,
    )
    assert r.status_code in (302, 303), r.text
    tier = session.scalar(
        select(Tier).where(Tier.product_id == shop.product.id, Tier.slug == "plus")
    )
    assert tier is not None and tier.gateway_price_ref is not None
