"""Charged what was shown: a checkout carries the price the buyer saw (the quote's total per
charge and what is due today), and a price that changed in between (the publisher edited the
tier, a trial no longer applies) is refused with 409 ``price_changed`` and nothing is ordered
or charged; the page shows the new price beside the refusal, and paying that one works."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.billing.models import Order
from store.billing.runtime import Billing
from store.catalog import service as catalog
from tests.billing.conftest import Shop
from tests.factories import api_token, auth
from tests.web.helpers import HTML, csrf_of, login

CARD = "4242424242424242"


def _orders(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(Order)) or 0)


def _hidden_price(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(expected_[a-z_]+_minor)" value="(\d+)"', html))


def _raise_price(session: Session, shop: Shop, tier: object, amount: int) -> None:
    catalog.update_tier(session, actor=shop.publisher, tier=tier, amount_minor=amount)
    session.commit()


def test_api_checkout_refuses_a_price_other_than_the_one_quoted(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    buyer = auth(api_token(session, shop.buyer))
    tier = shop.one_time
    quoted = client.get("/api/v1/billing/quote", params={"tier_id": str(tier.id)}).json()
    assert (quoted["total_minor"], quoted["due_now_minor"]) == (9900, 9900)
    _raise_price(session, shop, tier, 19900)
    body = {
        "tier_id": str(tier.id),
        "card_number": CARD,
        "expected_total_minor": quoted["total_minor"],
        "expected_due_now_minor": quoted["due_now_minor"],
    }
    refused = client.post("/api/v1/billing/checkout", json=body, headers=buyer)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "price_changed"
    assert "$199.00" in refused.json()["detail"]
    assert _orders(session) == 0
    again = client.get("/api/v1/billing/quote", params={"tier_id": str(tier.id)}).json()
    body.update(expected_total_minor=again["total_minor"], expected_due_now_minor=19900)
    paid = client.post("/api/v1/billing/checkout", json=body, headers=buyer)
    assert paid.status_code == 201, paid.text
    assert paid.json()["order"]["total_minor"] == 19900


def test_api_checkout_refuses_a_trial_that_no_longer_applies(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    """The same total per year, but due today instead of after a free trial: not the quote."""
    buyer = auth(api_token(session, shop.buyer))
    tier = shop.trial
    quoted = client.get("/api/v1/billing/quote", params={"tier_id": str(tier.id)}).json()
    assert quoted["due_now_minor"] == 0
    catalog.update_tier(session, actor=shop.publisher, tier=tier, trial_days=0)
    session.commit()
    body = {
        "tier_id": str(tier.id),
        "card_number": CARD,
        "expected_total_minor": quoted["total_minor"],
        "expected_due_now_minor": 0,
    }
    refused = client.post("/api/v1/billing/checkout", json=body, headers=buyer)
    assert refused.status_code == 409 and refused.json()["error"] == "price_changed"
    assert _orders(session) == 0


@pytest.mark.parametrize("which", ["one_time", "monthly"])
def test_checkout_page_charges_only_the_price_it_showed(
    client: TestClient, session: Session, billing: Billing, shop: Shop, which: str
) -> None:
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    tier = getattr(shop, which)
    page = f"/checkout/{tier.id}"
    shown = client.get(page).text
    # What a browser sends: the card, and the hidden inputs of the form shown.
    sent = {"card_number": CARD, "csrf_token": csrf_of(shown)} | _hidden_price(shown)
    assert sent["expected_total_minor"] == str(tier.amount_minor)
    _raise_price(session, shop, tier, tier.amount_minor + 5000)
    refused = client.post(page, data=sent, follow_redirects=False)
    assert refused.status_code == 409, refused.text
    assert "The price changed" in refused.text
    assert f"it is now ${tier.amount_minor / 100:.2f}" in refused.text
    assert _orders(session) == 0
    # The refusal shows the new price; paying from it charges exactly that.
    paid = client.post(
        page,
        data={"card_number": CARD, "csrf_token": csrf_of(refused.text)}
        | _hidden_price(refused.text),
        follow_redirects=False,
    )
    assert paid.status_code == 303, paid.text
    session.expire_all()
    order = session.scalar(select(Order))
    assert order is not None and order.amount_minor == tier.amount_minor
