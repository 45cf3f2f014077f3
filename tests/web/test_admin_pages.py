"""Administration pages: only for administrators; verification, badges, moderation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.licensing import entitlements
from tests.factories import make_account, make_admin, make_org, make_product
from tests.web.helpers import is_html, login, submit


@pytest.mark.parametrize(
    "path", ["/admin", "/admin/products", "/admin/accounts", "/admin/entitlements"]
)
def test_non_admins_get_403(browser: TestClient, session: Session, path: str) -> None:
    make_account(session, "regular")
    login(browser, "regular")
    response = browser.get(path)
    assert response.status_code == 403
    assert is_html(response)
    assert "for administrators only" in response.text
    assert "Admin</a>" not in response.text  # no admin link in the header either


def test_anonymous_admin_goes_to_login(browser: TestClient) -> None:
    response = browser.get("/admin", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fadmin"


def test_admin_verifies_badges_and_suspends(browser: TestClient, session: Session) -> None:
    chief = make_admin(session, "chief")
    owner = make_account(session, "vendor")
    org = make_org(session, owner, "vendorco")
    product = make_product(session, org, owner, "engine", title="Engine")
    accounts.request_verification(session, org=org, actor=owner)
    login(browser, "chief")

    overview = browser.get("/admin")
    assert "Awaiting verification" in overview.text and "vendorco" in overview.text
    verified = submit(
        browser,
        "/admin",
        "/admin/orgs/vendorco/verification",
        {"decision": "verify", "note": "Checked the domain"},
    )
    assert "vendorco is verified." in verified.text
    assert "No publisher is waiting." in verified.text
    session.refresh(org)
    assert org.verified and org.verification_note == "Checked the domain"

    badged = submit(
        browser,
        "/admin/products",
        "/admin/products/vendorco/engine/badges",
        {"official": "on", "certified": "on", "next": "/admin/products?status=published"},
    )
    assert badged.url.path == "/admin/products"
    assert badged.url.query == b"status=published"
    assert "Badges of vendorco/engine saved." in badged.text
    session.refresh(product)
    # The badges form cannot certify: certification goes through the review.
    assert product.official and not product.certified
    listing = browser.get("/admin/products").text
    assert 'name="certified"' not in listing
    assert 'href="/admin/certification?status=all">Certification review' in listing
    assert "/admin/products/vendorco/engine/uncertify" not in listing

    # Removing a certification (made by an approved review) voids it.
    catalog.set_badges(session, actor=chief, product=product, certified=True)
    session.commit()
    assert "/admin/products/vendorco/engine/uncertify" in browser.get("/admin/products").text
    removed = submit(
        browser,
        "/admin/products",
        "/admin/products/vendorco/engine/uncertify",
        {"next": "/admin/products?status=published"},
    )
    assert removed.url.path == "/admin/products"
    assert "The certification of vendorco/engine is removed." in removed.text
    session.refresh(product)
    assert product.official and not product.certified
    assert "badge-certified" not in browser.get("/products/vendorco/engine").text

    no_reason = submit(
        browser,
        "/admin/products",
        "/admin/products/vendorco/engine/status",
        {"status": "suspended"},
    )
    assert "Say why the product is suspended" in no_reason.text
    suspended = submit(
        browser,
        "/admin/products",
        "/admin/products/vendorco/engine/status",
        {"status": "suspended", "reason": "Malware report"},
    )
    assert "vendorco/engine is suspended now." in suspended.text
    session.refresh(product)
    assert product.status == "suspended"
    browser.cookies.clear()
    assert browser.get("/products/vendorco/engine").status_code == 404
    login(browser, "vendor")
    assert "Malware report" in browser.get("/publish/vendorco/engine").text
    browser.cookies.clear()

    login(browser, "chief")
    listed = browser.get("/admin/products", params={"status": "suspended"})
    assert "vendorco/engine" in listed.text
    assert browser.get("/admin/products", params={"status": "gone"}).status_code == 400
    reinstated = submit(
        browser,
        "/admin/products",
        "/admin/products/vendorco/engine/status",
        {"status": "published"},
    )
    assert "vendorco/engine is published now." in reinstated.text


def test_admin_accounts_toggles(browser: TestClient, session: Session) -> None:
    chief = make_admin(session, "chief2")
    target = make_account(session, "target")
    login(browser, "chief2")
    page = browser.get("/admin/accounts", params={"q": "targ"})
    assert "target@example.com" in page.text and "chief2@example.com" not in page.text

    made = submit(browser, "/admin/accounts", "/admin/accounts/target/admin", {"value": "1"})
    assert "target is an administrator." in made.text
    disabled = submit(browser, "/admin/accounts", "/admin/accounts/target/active", {"value": "0"})
    assert "target is disabled." in disabled.text
    session.refresh(target)
    assert target.is_admin and not target.is_active

    self_lockout = submit(
        browser, "/admin/accounts", "/admin/accounts/chief2/admin", {"value": "0"}
    )
    assert "You cannot remove your own administrator rights" in self_lockout.text
    session.refresh(chief)
    assert chief.is_admin


def test_admin_grants_and_revokes(browser: TestClient, session: Session) -> None:
    make_admin(session, "chief3")
    owner = make_account(session, "seller")
    org = make_org(session, owner, "sellco")
    make_product(
        session,
        org,
        owner,
        "box",
        tiers=[{"slug": "pro", "billing": "one_time", "amount_minor": 500}],
    )
    lucky = make_account(session, "lucky")
    login(browser, "chief3")

    unknown = submit(
        browser,
        "/admin/entitlements",
        "/admin/entitlements",
        {"username": "lucky", "product": "sellco/box", "tier": "nope"},
    )
    assert unknown.status_code == 422
    assert "sellco/box has no tier &#39;nope&#39;" in unknown.text
    assert 'value="sellco/box"' in unknown.text

    granted = submit(
        browser,
        "/admin/entitlements",
        "/admin/entitlements",
        {"username": "lucky", "product": "sellco/box", "tier": "pro", "reason": "contest"},
    )
    assert granted.url.params["username"] == "lucky"
    assert "sellco/box (Pro) granted." in granted.text
    held = entitlements.entitlements_of(session, lucky)
    assert len(held) == 1

    by_product = browser.get("/admin/entitlements", params={"product": "sellco/box"})
    assert "lucky" in by_product.text
    missing = browser.get("/admin/entitlements", params={"username": "nobody"})
    assert "No account named" in missing.text

    revoked = submit(
        browser,
        "/admin/entitlements?username=lucky",
        f"/admin/entitlements/{held[0].id}/revoke",
        {"reason": "fraud", "next": "/admin/entitlements?username=lucky"},
    )
    assert "Entitlement revoked." in revoked.text
    session.refresh(held[0])
    assert held[0].status == "revoked"
