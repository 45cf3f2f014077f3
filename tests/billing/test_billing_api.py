"""The billing JSON API under /api/v1."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.billing.runtime import Billing
from tests.billing.conftest import Shop
from tests.factories import api_token, auth, make_account


def test_checkout_orders_subscriptions_refund_sales(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    buyer = auth(api_token(session, shop.buyer))
    admin = auth(api_token(session, shop.admin))
    publisher = auth(api_token(session, shop.publisher))

    r = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(shop.one_time.id), "card_number": "4242424242424242"},
        headers=buyer,
    )
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    assert order["status"] == "paid" and order["total_minor"] == 9900 and order["receipt_number"]

    # One open purchase per holder and product: buying again (any tier) is a 409.
    for tier in (shop.one_time, shop.monthly):
        r = client.post(
            "/api/v1/billing/checkout",
            json={"tier_id": str(tier.id), "card_number": "4242424242424242"},
            headers=buyer,
        )
        assert r.status_code == 409 and r.json()["error"] == "already_owned", r.text
        assert r.json()["manage_url"] == "/my/purchases"
        assert r.json()["purchase"] == {"kind": "order", "id": order["id"], "status": "paid"}

    other = auth(api_token(session, make_account(session)))
    r = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(shop.one_time.id), "card_number": "4000002500003155"},
        headers=other,
    )
    assert r.json()["next_action"] == "authenticate"
    assert r.json()["order"]["status"] == "requires_action"
    # A checkout in progress: the second answer points at the first order.
    again = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(shop.monthly.id), "card_number": "4242424242424242"},
        headers=other,
    )
    assert again.status_code == 409
    assert again.json()["manage_url"] == f"/checkout/orders/{r.json()['order']['id']}"

    subscriber = auth(api_token(session, make_account(session)))
    r = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(shop.monthly.id), "card_number": "4242424242424242"},
        headers=subscriber,
    )
    assert r.status_code == 201 and r.json()["order"]["kind"] == "subscription"

    mine = client.get("/api/v1/billing/orders", headers=buyer).json()
    assert len(mine) == 1
    assert client.get(f"/api/v1/billing/orders/{order['id']}", headers=publisher).status_code == 404

    subs = client.get("/api/v1/billing/subscriptions", headers=subscriber).json()
    assert [s["status"] for s in subs] == ["active"]
    sub_id = subs[0]["id"]
    r = client.post(f"/api/v1/billing/subscriptions/{sub_id}/cancel", headers=subscriber)
    assert r.status_code == 200 and r.json()["cancel_at_period_end"] is True
    r = client.post(f"/api/v1/billing/subscriptions/{sub_id}/resume", headers=subscriber)
    assert r.json()["cancel_at_period_end"] is False
    assert (
        client.post(f"/api/v1/billing/subscriptions/{sub_id}/cancel", headers=publisher).status_code
        == 404
    )

    url = f"/api/v1/billing/orders/{order['id']}/refunds"
    assert client.post(url, json={"amount_minor": 100}, headers=buyer).status_code == 403
    r = client.post(url, json={"amount_minor": 100}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "partially_refunded"
    r = client.post(url, json={"amount_minor": 100_000}, headers=admin)
    assert r.status_code == 422 and r.json()["error"] == "invalid"
    r = client.post(url, json={}, headers=admin)
    assert r.json()["status"] == "refunded" and r.json()["refunded_minor"] == 9900

    r = client.get(f"/api/v1/billing/sales/{shop.org.slug}", headers=publisher)
    assert r.status_code == 200
    by_tier = {row["tier"]: row for row in r.json()}
    assert by_tier["lifetime"]["refunded_minor"] == 9900 and by_tier["lifetime"]["net_minor"] == 0
    assert by_tier["pro"]["gross_minor"] == 4900
    r = client.get(f"/api/v1/billing/sales/{shop.org.slug}?format=csv", headers=publisher)
    assert r.text.startswith("month,product,tier,currency,orders")
    assert client.get(f"/api/v1/billing/sales/{shop.org.slug}", headers=buyer).status_code == 403


def test_quote_and_checkout_with_country(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    billing.settings.tax_rates = "DE=19"
    billing.settings.tax_home_country = "DE"
    buyer = auth(api_token(session, shop.buyer))
    r = client.get(
        "/api/v1/billing/quote",
        params={"tier_id": str(shop.trial.id), "country": "de", "quantity": 2},
        headers=buyer,
    )
    assert r.status_code == 200, r.text
    q = r.json()
    assert (q["subtotal_minor"], q["tax_minor"], q["total_minor"]) == (98000, 18620, 116620)
    assert (q["interval"], q["trial_days"], q["due_now_minor"], q["tax_rate"]) == (
        "year",
        14,
        0,
        "19",
    )
    r = client.get(
        "/api/v1/billing/quote",
        params={"tier_id": str(shop.one_time.id), "country": "FR", "vat_id": "FR 12345678901"},
        headers=buyer,
    )
    assert (r.json()["tax_minor"], r.json()["reverse_charge"]) == (0, True)
    bad = client.get(
        "/api/v1/billing/quote",
        params={"tier_id": str(shop.one_time.id), "country": "Germany"},
        headers=buyer,
    )
    assert bad.status_code == 422 and bad.json()["field"] == "country"
    # The store's own checks name the input too: a country that is not two letters, none.
    for params, code in (({"country": "D1"}, "bad_country"), ({}, "country_required")):
        refused = client.post(
            "/api/v1/billing/checkout",
            json={"tier_id": str(shop.one_time.id), "card_number": "4242424242424242", **params},
            headers=buyer,
        )
        assert refused.status_code == 422 and refused.json()["error"] == code, refused.text
        assert refused.json()["field"] == "country"
    r = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(shop.one_time.id), "card_number": "4242424242424242", "country": "DE"},
        headers=buyer,
    )
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    assert (order["amount_minor"], order["tax_minor"], order["total_minor"]) == (9900, 1881, 11781)
