"""The customer path on the embedded default (test gateway), through the pages."""

from __future__ import annotations

import csv
import io
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.licensing import service as licensing
from store.licensing.models import Entitlement
from store.registry.explain import access_for
from tests.billing.conftest import Shop
from tests.factories import make_account
from tests.web.helpers import HTML, csrf_of, login, submit


@pytest.fixture
def browser(client: TestClient, billing: Billing) -> TestClient:
    client.headers.update(HTML)
    return client


def buy(browser: TestClient, tier_id: object, card: str) -> tuple[str, str]:
    page = f"/checkout/{tier_id}"
    r = submit(
        browser,
        page,
        page,
        {"card_number": card, "exp": "12/34", "cvc": "123"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith("/checkout/orders/")
    return location, browser.get(location).text


def test_checkout_requires_login(browser: TestClient, shop: Shop) -> None:
    r = browser.get(f"/checkout/{shop.one_time.id}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_buy_get_entitlement_and_license(
    browser: TestClient, session: Session, shop: Shop, app: object
) -> None:
    login(browser, shop.buyer.username)
    page = browser.get(f"/checkout/{shop.one_time.id}")
    assert (
        page.status_code == 200 and "TEST MODE" in page.text and "4242 4242 4242 4242" in page.text
    )
    assert (
        "js.stripe.com" not in page.text
        and "https://" not in page.headers["content-security-policy"]
    )
    _location, text = buy(browser, shop.one_time.id, "4242 4242 4242 4242")
    assert "Payment received" in text
    order = session.scalars(select(Order).where(Order.account_id == shop.buyer.id)).one()
    assert order.status == "paid"
    access = access_for(session, shop.buyer, shop.product)
    assert access.allowed and access.entitlement is not None
    document = licensing.current_license(
        session, app.state.keyring, app.state.settings, access.entitlement
    )  # type: ignore[attr-defined]
    assert document.entitlement_id == access.entitlement.id and document.revoked_at is None

    purchases = browser.get("/my/purchases")
    assert purchases.status_code == 200 and order.receipt_number in purchases.text
    receipt = browser.get(f"/my/purchases/orders/{order.id}/receipt")
    assert (
        receipt.status_code == 200
        and "$99.00" in receipt.text
        and order.receipt_number in receipt.text
    )


def test_declined_page_tells_the_truth(browser: TestClient, shop: Shop) -> None:
    login(browser, shop.buyer.username)
    _, text = buy(browser, shop.one_time.id, "4000 0000 0000 0002")
    assert "did not go through" in text and "declined" in text and "Try again" in text


@pytest.mark.parametrize(
    ("decision", "expect"), [("approve", "Payment received"), ("fail", "did not go through")]
)
def test_authentication_page(browser: TestClient, shop: Shop, decision: str, expect: str) -> None:
    login(browser, shop.buyer.username)
    location, text = buy(browser, shop.one_time.id, "4000002500003155")
    assert "confirm this payment" in text
    r = submit(
        browser, location + "/authenticate", location + "/authenticate", {"decision": decision}
    )
    assert r.status_code == 200 and expect in r.text


def test_pending_page_refreshes(
    browser: TestClient, session: Session, shop: Shop, billing: Billing
) -> None:
    from store.billing import orders

    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time)
    session.commit()
    login(browser, shop.buyer.username)
    r = browser.get(f"/checkout/orders/{order.id}")
    assert (
        r.status_code == 200
        and r.headers.get("refresh") == "3"
        and "Nothing is active yet" in r.text
    )


def test_subscription_cancel_and_resume_from_my_purchases(
    browser: TestClient, session: Session, shop: Shop
) -> None:
    login(browser, shop.buyer.username)
    buy(browser, shop.monthly.id, "4242424242424242")
    sub = session.scalars(
        select(Subscription).where(Subscription.account_id == shop.buyer.id)
    ).one()
    assert sub.status == "active"
    r = submit(browser, "/my/purchases", f"/my/purchases/subscriptions/{sub.id}/cancel")
    assert r.status_code == 200 and "Resume" in r.text
    session.expire_all()
    assert session.get(Subscription, sub.id).cancel_at_period_end is True  # type: ignore[union-attr]
    r = submit(browser, "/my/purchases", f"/my/purchases/subscriptions/{sub.id}/resume")
    assert r.status_code == 200
    session.expire_all()
    assert session.get(Subscription, sub.id).cancel_at_period_end is False  # type: ignore[union-attr]


def test_other_peoples_orders_are_not_found(
    browser: TestClient, session: Session, shop: Shop
) -> None:
    login(browser, shop.buyer.username)
    buy(browser, shop.one_time.id, "4242424242424242")
    order = session.scalars(select(Order)).one()
    browser.post("/logout", data={"csrf_token": csrf_of(browser.get("/my/purchases").text)})
    login(browser, shop.publisher.username)
    assert browser.get(f"/checkout/orders/{order.id}").status_code == 404
    assert browser.get(f"/my/purchases/orders/{order.id}/receipt").status_code == 404


def test_publisher_sales_and_csv(browser: TestClient, session: Session, shop: Shop) -> None:
    other = make_account(session)
    session.commit()
    for account, tier in ((shop.buyer, shop.one_time), (other, shop.monthly)):
        login(browser, account.username)
        buy(browser, tier.id, "4242424242424242")
        browser.post("/logout", data={"csrf_token": csrf_of(browser.get("/my/purchases").text)})
    login(browser, shop.publisher.username)
    r = browser.get(f"/publish/{shop.org.slug}/-/sales")
    assert r.status_code == 200 and "$99.00" in r.text and "$49.00" in r.text, r.text[-3000:]
    r = browser.get(f"/publish/{shop.org.slug}/-/sales.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted((row["tier"], row["gross_minor"], row["orders"]) for row in rows) == [
        ("lifetime", "9900", "1"),
        ("pro", "4900", "1"),
    ]


def test_sales_are_for_members_only(browser: TestClient, shop: Shop) -> None:
    login(browser, shop.buyer.username)
    assert browser.get(f"/publish/{shop.org.slug}/-/sales").status_code == 403
    assert browser.get(f"/publish/{shop.org.slug}/-/sales.csv").status_code == 403


def test_admin_partial_and_full_refund(browser: TestClient, session: Session, shop: Shop) -> None:
    login(browser, shop.buyer.username)
    buy(browser, shop.one_time.id, "4242424242424242")
    order = session.scalars(select(Order)).one()
    browser.post("/logout", data={"csrf_token": csrf_of(browser.get("/my/purchases").text)})
    login(browser, shop.admin.username)
    assert str(order.id) in browser.get("/admin/orders").text
    page = f"/admin/orders/{order.id}"
    r = submit(browser, page, page + "/refund", {"amount": "10.50"})
    assert r.status_code == 200 and "Partially refunded" in r.text
    session.expire_all()
    assert session.get(Order, order.id).refunded_minor == 1050  # type: ignore[union-attr]
    r = submit(browser, page, page + "/refund", {"amount": "1000"})
    assert r.status_code == 422
    r = submit(browser, page, page + "/refund", {"amount": ""})
    assert r.status_code == 200 and "Refunded" in r.text
    session.expire_all()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    assert order.status == "refunded"
    assert session.get(Entitlement, order.entitlement_id).status == "revoked"  # type: ignore[union-attr]


def test_admin_pages_for_admins_only(browser: TestClient, session: Session, shop: Shop) -> None:
    login(browser, shop.buyer.username)
    assert browser.get("/admin/orders").status_code == 403


def test_product_page_shows_what_the_buyer_owns(
    browser: TestClient, session: Session, shop: Shop
) -> None:
    login(browser, shop.buyer.username)
    page = f"/products/{shop.product.repository}"
    assert f'href="/checkout/{shop.one_time.id}"' in browser.get(page).text
    buy(browser, shop.monthly.id, "4242424242424242")
    r = browser.get(page)
    assert "Your plan" in r.text and "Pro" in r.text and 'href="/my/purchases">manage' in r.text
    assert f'href="/checkout/{shop.one_time.id}"' not in r.text
    # Buying again anyway (an old tab): 409 with a link to manage it, nothing charged.
    checkout = f"/checkout/{shop.one_time.id}"
    again = submit(browser, checkout, checkout, {"card_number": "4242424242424242"})
    assert again.status_code == 409 and 'href="/my/purchases">Manage it' in again.text
    assert len(session.scalars(select(Order).where(Order.account_id == shop.buyer.id)).all()) == 1
    other = make_account(session)
    session.commit()
    browser.post("/logout", data={"csrf_token": csrf_of(browser.get("/my/purchases").text)})
    login(browser, other.username)
    buy(browser, shop.one_time.id, "4242424242424242")
    r = browser.get(page)
    assert "You own this" in r.text and "Lifetime" in r.text


def test_checkout_asks_for_the_country_when_tax_is_configured(
    browser: TestClient, session: Session, shop: Shop, billing: Billing
) -> None:
    billing.settings.tax_rates = "DE=19,FR=20"
    billing.settings.tax_home_country = "DE"
    login(browser, shop.buyer.username)
    page = f"/checkout/{shop.one_time.id}"
    assert 'name="country"' in browser.get(page).text
    fr = browser.get(page, params={"country": "fr"}).text
    assert "$19.80" in fr and "$118.80" in fr  # 20 % of 99.00
    assert "Tax (20%)" in fr
    business = browser.get(page, params={"country": "FR", "vat_id": "FR12345678901"}).text
    assert "reverse charge" in business and "$99.00" in business
    missing = submit(browser, page, page, {"card_number": "4242424242424242"})
    assert missing.status_code == 422 and "Choose your country" in missing.text
    done = submit(browser, page, page, {"card_number": "4242424242424242", "country": "FR"})
    assert done.status_code == 200
    order = session.scalars(select(Order).where(Order.account_id == shop.buyer.id)).one()
    assert (order.total_minor, order.tax_minor, order.tax_country) == (11880, 1980, "FR")
    receipt = browser.get(f"/my/purchases/orders/{order.id}/receipt").text
    assert "(20%)" in receipt and "$19.80" in receipt


def _beside(html: str, element: str) -> str:
    """The error shown beside the input whose error element is ``element`` ("" if none)."""
    found = re.search(rf'id="{element}-error">([^<]*)<', html)
    return found.group(1) if found else ""


def _value(html: str, element: str) -> str:
    found = re.search(rf'id="{element}" name="[^"]+" value="([^"]*)"', html)
    assert found, element
    return found.group(1)


def test_checkout_errors_stand_beside_their_fields_with_the_input_kept(
    browser: TestClient, session: Session, shop: Shop, billing: Billing
) -> None:
    """A bad coupon, VAT id or quantity, in the price preview (GET) or the card form (POST):
    each is shown beside its input (several at once too), the other inputs are kept, and
    nothing is bought."""
    from store.billing import coupons

    billing.settings.tax_rates = "DE=19,FR=20"
    billing.settings.tax_home_country = "DE"
    shop.one_time.seats = 5
    coupons.create(
        session,
        actor=shop.publisher,
        org=shop.org,
        spec=coupons.CouponSpec(code="PAGE10", product=shop.product.repository, percent_off="10"),
    )
    session.commit()
    login(browser, shop.buyer.username)
    page = f"/checkout/{shop.one_time.id}"
    long_vat = "FR" + "1" * 33
    kept = {"country": "FR", "vat_id": "FR12345678901", "coupon": "PAGE10", "quantity": "2"}

    for field, wrong, message in (
        ("coupon", "NOPE", "There is no coupon NOPE for this product"),
        ("vat_id", long_vat, "A VAT id has at most 32 characters"),
        ("quantity", "two", "Quantity must be a whole number"),
    ):
        preview = browser.get(page, params={**kept, field: wrong})
        assert preview.status_code == 422, field
        assert _beside(preview.text, f"quote-{field}").startswith(message), field
        assert 'class="alert alert-error"' not in preview.text, field  # not above the form
        for other, value in kept.items():
            if other != field:
                assert _value(preview.text, f"quote-{other}") == value, (field, other)

        posted = submit(
            browser, page, page, {**kept, field: wrong, "card_number": "4242424242424242"}
        )
        assert posted.status_code == 422, field
        # The card form has the country and VAT id; the coupon and quantity are the preview's.
        element = f"checkout-{field}" if field == "vat_id" else f"quote-{field}"
        assert _beside(posted.text, element).startswith(message), field
        assert _value(posted.text, "country") == "FR", field
        if field != "vat_id":
            assert _value(posted.text, "vat_id") == "FR12345678901", field
        if field != "coupon":
            assert _value(posted.text, "quote-coupon") == "PAGE10", field

    # Several at once: each beside its own input; a missing card beside the card number.
    several = submit(browser, page, page, {**kept, "coupon": "NOPE", "vat_id": long_vat})
    assert several.status_code == 422
    assert _beside(several.text, "quote-coupon").startswith("There is no coupon NOPE")
    assert _beside(several.text, "checkout-vat_id").startswith("A VAT id has at most")
    assert _beside(several.text, "checkout-card_number") == "Enter a test card number."
    assert _value(several.text, "country") == "FR"
    assert not session.scalars(select(Order).where(Order.account_id == shop.buyer.id)).all()


def _pills(html: str) -> list[str]:
    return re.findall(r'<a class="pill pill-owned" href="([^"]+)">([^<]+)<', html)


def test_cards_and_search_results_show_what_the_viewer_owns(
    browser: TestClient, session: Session, shop: Shop
) -> None:
    """The owned state beside the price on home and browse cards and in search results,
    for the viewer's purchase and for its organization's; nothing for anyone else."""
    from store.accounts import service as accounts

    title = shop.product.title
    login(browser, shop.buyer.username)
    pages = ("/", "/browse", f"/search?q={title}")
    for page in pages:
        assert _pills(browser.get(page).text) == [], page
    buy(browser, shop.monthly.id, "4242424242424242")
    for page in pages:
        assert ("/my/purchases", "Your plan") in _pills(browser.get(page).text), page
    # The JSON search says it too, to the buyer only.
    from tests.factories import api_token, auth

    bearer = auth(api_token(session, shop.buyer))
    session.commit()
    found = browser.get("/api/v1/search", params={"q": title}, headers=bearer).json()
    mine = next(r for r in found["results"] if r["name"] == shop.product.repository)
    assert mine["owned"] == {"label": "Your plan", "manage_url": "/my/purchases"}
    anonymous = browser.get("/api/v1/search", params={"q": title}).json()  # no bearer token
    assert all(r["owned"] is None for r in anonymous["results"])
    # An organization's purchase shows for its members, named.
    team = make_account(session)
    org = accounts.create_organization(session, owner=team, slug="buyerco", name="Buyer Co")
    session.commit()
    browser.post("/logout", data={"csrf_token": csrf_of(browser.get("/my/purchases").text)})
    login(browser, team.username)
    assert _pills(browser.get("/browse").text) == []
    subscription = session.scalars(
        select(Subscription).where(Subscription.account_id == shop.buyer.id)
    ).one()
    subscription.holder_key = org.id
    session.commit()
    assert ("/my/purchases", "Buyer Co owns this") in _pills(browser.get("/browse").text)
    # The search result says so instead of "You have access".
    assert "Buyer Co owns this" in browser.get("/search", params={"q": title}).text


def test_owned_marks_take_one_query_for_a_page(session: Session, shop: Shop) -> None:
    from sqlalchemy import event

    from store.billing import ownership
    from tests.factories import make_product

    products = [shop.product] + [
        make_product(session, shop.org, shop.publisher, f"extra-{i}") for i in range(5)
    ]
    order = Order(
        account_id=shop.buyer.id,
        holder_key=shop.buyer.id,
        product_id=products[2].id,
        tier_id=products[2].tiers[0].id,
        kind="one_time",
        status="paid",
        currency="usd",
        amount_minor=0,
        gateway="test",
    )
    session.add(order)
    session.flush()
    statements: list[str] = []
    engine = session.get_bind()

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        marks = ownership.owned_marks(session, shop.buyer, [p.id for p in products])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements
    assert set(marks) == {products[2].id}
    assert marks[products[2].id].label == "You own this"
    assert ownership.owned_marks(session, None, [p.id for p in products]) == {}
