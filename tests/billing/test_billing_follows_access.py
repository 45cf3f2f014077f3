"""Billing follows access on the test gateway: refunds, unpublishing, suspension, disputes
(hand-signed Stripe events for what comes from the dashboard), and a gateway that fails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.billing import access, catalog_follow, orders, subscriptions
from store.billing.gateway import GatewayError, PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS, TestGateway
from store.catalog import service as catalog
from store.errors import Conflict
from store.licensing.models import Entitlement
from store.registry.explain import access_for
from store.registry.grants import Principal, RepoFacts, allowed_repository_actions
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event
from tests.factories import api_token, auth, make_account
from tests.web.helpers import HTML, login


def subscribe(session: Session, billing: Billing, shop: Shop) -> tuple[Order, Subscription]:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active" and order.status == "paid"
    return order, sub


def buy_once(
    session: Session, billing: Billing, shop: Shop, account: Account | None = None
) -> Order:
    account = account or shop.buyer
    order = orders.start_checkout(session, billing, account=account, tier=shop.one_time)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    assert order.status == "paid"
    return order


def fresh(session: Session, obj: Any) -> Any:
    session.expire_all()
    return session.get(type(obj), obj.id)


def ent_of(session: Session, entitlement_id: Any) -> Entitlement:
    ent = session.get(Entitlement, entitlement_id)
    assert ent is not None
    return ent


def charge(order: Order, refunded: int) -> dict[str, Any]:
    return {
        "id": "ch_dash_" + order.id.hex[:8],
        "object": "charge",
        "amount": order.total_minor,
        "amount_refunded": refunded,
        "refunded": refunded >= order.total_minor,
        "payment_intent": order.payment_ref,
    }


def dispute(order: Order, status: str = "needs_response") -> dict[str, Any]:
    return {
        "id": "dp_" + order.id.hex[:8],
        "object": "dispute",
        "status": status,
        "amount": order.total_minor,
        "charge": {"id": "ch_x", "payment_intent": order.payment_ref},
    }


# --- refunds -----------------------------------------------------------------------------


def test_dashboard_refund_of_a_subscription_payment_cancels_it(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order, sub = subscribe(session, billing, shop)
    # A partial refund (a goodwill credit) keeps the subscription and the access.
    r = post_event(client, make_event("charge.refunded", charge(order, 1000)))
    assert r.status_code == 200
    sub = fresh(session, sub)
    assert sub.status == "active" and sub.end_requested is None
    assert ent_of(session, sub.entitlement_id).status == "active"
    # The rest refunded from the dashboard: access revoked and billing stopped at once.
    post_event(client, make_event("charge.refunded", charge(order, order.total_minor)))
    sub = fresh(session, sub)
    assert fresh(session, order).status == "refunded"
    assert sub.status == "canceled" and (sub.end_requested, sub.end_reason) == ("now", "refunded")
    assert ent_of(session, sub.entitlement_id).status == "revoked"
    # The sweep never renews it.
    counts = subscriptions.expire_due(session, billing, sub.current_period_end + timedelta(days=1))
    assert counts["renewed"] == 0
    assert len(session.scalars(select(Order).where(Order.subscription_id == sub.id)).all()) == 1


def test_admin_refund_of_a_subscription_payment_cancels_it(
    session: Session, billing: Billing, shop: Shop
) -> None:
    order, sub = subscribe(session, billing, shop)
    orders.refund(session, billing, actor=shop.admin, order=order)
    session.commit()
    sub = fresh(session, sub)
    assert sub.status == "canceled" and sub.end_reason == "refunded"


# --- the product's status ----------------------------------------------------------------


def test_unpublishing_ends_subscriptions_at_period_end(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    _order, sub = subscribe(session, billing, shop)
    # Another customer's perpetual license (one open purchase per holder and product).
    perpetual = buy_once(session, billing, shop, make_account(session))
    catalog.set_status(session, actor=shop.publisher, product=shop.product, status="draft")
    session.commit()
    # Recorded by the edit; the gateway is told once it committed.
    sub = fresh(session, sub)
    assert sub.end_requested == "period_end" and not sub.cancel_at_period_end
    catalog_follow.follow_up(session, billing, shop.product.id)
    session.commit()
    sub = fresh(session, sub)
    assert sub.status == "active" and sub.cancel_at_period_end
    assert (sub.end_requested, sub.end_reason) == ("period_end", "unpublished")
    # Access until the end of the paid period, for the subscriber and the perpetual buyer.
    product = fresh(session, shop.product)
    state = access_for(session, shop.buyer, product)
    assert state.allowed and state.reason == "entitled"
    facts = RepoFacts(
        name=product.repository, product_id=product.id, product_status="draft", entitled=True
    )
    buyer = Principal(kind="account", subject=shop.buyer.username, account_id=shop.buyer.id)
    assert allowed_repository_actions(buyer, facts) == {"pull"}
    # Nobody new gets it.
    assert not access_for(session, make_account(session), product).allowed
    # The buyer is told, and cannot resume it.
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    assert "stopped selling this product" in client.get("/my/purchases").text
    with pytest.raises(Conflict) as info:
        subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=False)
    assert info.value.code == "subscription_ending"
    # At the end of the period it ends, with no renewal charge.
    end = sub.current_period_end
    counts = subscriptions.expire_due(session, billing, end + timedelta(minutes=1))
    assert counts["renewed"] == 0
    session.commit()
    sub = fresh(session, sub)
    assert sub.status in ("canceled", "expired")
    assert ent_of(session, sub.entitlement_id).effective_status(end + timedelta(minutes=1)) in (
        "expired",
    )
    assert len(session.scalars(select(Order).where(Order.subscription_id == sub.id)).all()) == 1
    assert ent_of(session, perpetual.entitlement_id).status == "active"


def test_publishing_again_lifts_only_the_unpublishing(
    session: Session, billing: Billing, shop: Shop
) -> None:
    _, sub = subscribe(session, billing, shop)

    def edit(status: str) -> None:
        catalog.set_status(session, actor=shop.publisher, product=shop.product, status=status)
        catalog_follow.follow_up(session, billing, shop.product.id)

    edit("draft")
    assert fresh(session, sub).cancel_at_period_end
    edit("published")
    sub = fresh(session, sub)
    assert not sub.cancel_at_period_end and sub.end_requested is None
    # A cancellation the customer asked for stays.
    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=True)
    edit("draft")
    edit("published")
    assert fresh(session, sub).cancel_at_period_end


def test_suspension_cancels_at_once(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    _, sub = subscribe(session, billing, shop)
    admin = auth(api_token(session, shop.admin))
    session.commit()
    r = client.post(
        f"/api/v1/products/{shop.product.repository}/status",
        json={"status": "suspended", "reason": "Malware found"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    sub = fresh(session, sub)
    assert sub.status == "canceled" and sub.end_reason == "suspended"
    product = fresh(session, shop.product)
    assert access_for(session, shop.buyer, product).reason == "product_suspended"
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    assert "suspended this product" in client.get("/my/purchases").text


# --- disputes -------------------------------------------------------------------------------


def test_dispute_pauses_lost_revokes_one_time(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = buy_once(session, billing, shop)
    post_event(client, make_event("charge.dispute.created", dispute(order)))
    order = fresh(session, order)
    assert order.dispute_status == "open" and order.disputed_at is not None
    assert ent_of(session, order.entitlement_id).status == "suspended"
    state = access_for(session, shop.buyer, shop.product)
    assert not state.allowed and "disputed" in state.message
    post_event(client, make_event("charge.dispute.closed", dispute(order, "lost")))
    assert fresh(session, order).dispute_status == "lost"
    assert ent_of(session, order.entitlement_id).status == "revoked"


@pytest.mark.parametrize("status", ["won", "warning_closed"])
def test_won_dispute_restores_one_time(
    client: TestClient, session: Session, billing: Billing, shop: Shop, status: str
) -> None:
    order = buy_once(session, billing, shop)
    post_event(client, make_event("charge.dispute.created", dispute(order)))
    post_event(client, make_event("charge.dispute.closed", dispute(order, status)))
    assert fresh(session, order).dispute_status == "won"
    assert ent_of(session, order.entitlement_id).status == "active"
    assert access_for(session, shop.buyer, shop.product).allowed


def test_dispute_events_out_of_order_and_twice(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = buy_once(session, billing, shop)
    closed = make_event("charge.dispute.closed", dispute(order, "won"))
    post_event(client, closed)
    # The opening arrives late: the dispute is settled already, access stays.
    post_event(client, make_event("charge.dispute.created", dispute(order)))
    assert fresh(session, order).dispute_status == "won"
    assert ent_of(session, order.entitlement_id).status == "active"
    assert post_event(client, closed).json()["status"] == "duplicate"
    # A second closing with another outcome never overturns the first.
    post_event(client, make_event("charge.dispute.closed", dispute(order, "lost")))
    assert ent_of(session, order.entitlement_id).status == "active"


def test_subscription_dispute_stops_renewal_and_settles(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order, sub = subscribe(session, billing, shop)
    post_event(client, make_event("charge.dispute.created", dispute(order)))
    sub = fresh(session, sub)
    assert sub.cancel_at_period_end and sub.end_reason == "disputed"
    ent = ent_of(session, sub.entitlement_id)
    assert ent.status == "suspended"
    # A renewal payment arriving meanwhile does not lift the dispute's suspension.
    end1 = int(sub.current_period_end.timestamp())
    renewal = {
        "id": "in_during_dispute",
        "object": "invoice",
        "amount_paid": 4900,
        "currency": "usd",
        "lines": {"data": [{"period": {"start": end1, "end": end1 + 30 * 86400}}]},
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
    }
    post_event(client, make_event("invoice.paid", renewal))
    assert ent_of(session, sub.entitlement_id).status == "suspended"
    # Won: access back and the subscription renews again.
    post_event(client, make_event("charge.dispute.closed", dispute(order, "won")))
    sub = fresh(session, sub)
    assert ent_of(session, sub.entitlement_id).status == "active"
    assert not sub.cancel_at_period_end and sub.end_requested is None


def test_subscription_dispute_lost_cancels(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order, sub = subscribe(session, billing, shop)
    post_event(client, make_event("charge.dispute.created", dispute(order)))
    post_event(client, make_event("charge.dispute.closed", dispute(order, "lost")))
    sub = fresh(session, sub)
    assert sub.status == "canceled" and sub.end_reason == "dispute_lost"
    assert ent_of(session, sub.entitlement_id).status == "revoked"


# --- a gateway that cannot be reached ---------------------------------------------------------


class FlakyGateway(TestGateway):
    """The test gateway, failing its next ``failures`` cancellations."""

    __test__ = False

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise GatewayError("connection refused")

    def cancel_now(self, session: Session, billing: Billing, **kw: Any) -> Any:
        self._maybe_fail()
        return super().cancel_now(session, billing, **kw)

    def set_cancel_at_period_end(self, session: Session, billing: Billing, **kw: Any) -> Any:
        self._maybe_fail()
        return super().set_cancel_at_period_end(session, billing, **kw)


@pytest.mark.parametrize("status", ["suspended", "draft"])
def test_a_failed_gateway_call_is_retried_by_the_sweep(
    session: Session, billing: Billing, shop: Shop, status: str
) -> None:
    _, sub = subscribe(session, billing, shop)
    flaky = Billing(settings=billing.settings, gateway=FlakyGateway(failures=1))
    catalog.set_status(
        session, actor=shop.admin, product=shop.product, status=status, reason="Checked"
    )
    session.commit()
    catalog_follow.follow_up(session, flaky, shop.product.id)  # the gateway is down
    session.commit()
    sub = fresh(session, sub)
    # Recorded, not yet at the gateway.
    assert sub.end_requested == ("now" if status == "suspended" else "period_end")
    assert sub.status == "active" and not sub.cancel_at_period_end
    counts = subscriptions.expire_due(session, flaky)
    assert counts["ended"] == 1
    sub = fresh(session, sub)
    if status == "suspended":
        assert sub.status == "canceled"
    else:
        assert sub.cancel_at_period_end and sub.status == "active"
    # Nothing more to send.
    assert subscriptions.expire_due(session, flaky)["ended"] == 0


def test_now_is_never_weakened(session: Session, billing: Billing, shop: Shop) -> None:
    _, sub = subscribe(session, billing, shop)
    flaky = Billing(settings=billing.settings, gateway=FlakyGateway(failures=5))
    access.request_end(session, flaky, sub, when="now", reason="refunded")
    assert not access.request_end(session, flaky, sub, when="period_end", reason="unpublished")
    assert (sub.end_requested, sub.end_reason) == ("now", "refunded")
