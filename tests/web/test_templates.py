"""Every template renders: a tour of the store's pages as each kind of user.

The loader of the app's Jinja environment is wrapped to record every template used
(pages, layouts, partials and macro files); at the end each storefront template must have
been rendered. Templates of other domains (e.g. search/) are rendered by their domain's
tests; here every template, theirs included, must at least compile.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jinja2 import BaseLoader, Environment
from sqlalchemy.orm import Session

from store import TEMPLATES_DIR
from store.accounts import links
from store.accounts import service as accounts
from store.catalog import service as catalog
from store.web.templating import format_money, format_price
from tests.factories import PASSWORD, make_account, make_admin, make_org, make_product, paid_tier
from tests.web.helpers import HTML, is_html, login, submit


class RecordingLoader(BaseLoader):
    def __init__(self, inner: BaseLoader) -> None:
        self.inner = inner
        self.used: set[str] = set()

    def get_source(self, environment: Environment, template: str) -> Any:
        self.used.add(template)
        return self.inner.get_source(environment, template)

    def list_templates(self) -> list[str]:
        return self.inner.list_templates()


# The storefront's own template directories ("" is the top level: base.html).
WEB_DIRS = {
    "",
    "_macros",
    "_partials",
    "errors",
    "catalog",
    "auth",
    "account",
    "publisher",
    "admin",
}


def all_templates() -> set[str]:
    return {p.relative_to(TEMPLATES_DIR).as_posix() for p in TEMPLATES_DIR.rglob("*.html")}


def web_templates() -> set[str]:
    return {name for name in all_templates() if name.rpartition("/")[0] in WEB_DIRS}


def check(response: Any, status: int = 200) -> str:
    assert response.status_code == status, (response.url, response.status_code)
    assert is_html(response)
    text: str = response.text
    # Every page has the landmarks, the skip link and no inline script.
    for marker in ('<main id="main"', 'href="#main"', "<header", "<footer", 'role="search"'):
        assert marker in text, (response.url, marker)
    assert not re.search(r"<script(?![^>]*\bsrc=)", text)
    return text


@pytest.fixture
def recorder(app: FastAPI) -> RecordingLoader:
    env = app.state.web_templates.env
    loader = RecordingLoader(env.loader)
    env.loader = loader
    env.cache.clear()
    return loader


def test_every_template_renders(
    browser: TestClient, session: Session, recorder: RecordingLoader
) -> None:
    admin = make_admin(session, "tour-admin")
    owner = make_account(session, "tour-owner")
    customer = make_account(session, "tour-customer")
    org = make_org(session, owner, "tourco", website="https://tour.test")
    product = make_product(
        session,
        org,
        owner,
        "app",
        title="Tour App",
        categories=["tools"],
        description_md="Some **markdown**",
        logo_url="https://tour.test/logo.png",
        support_url="https://tour.test/support",
        tiers=[{"slug": "free", "billing": "free", "features": ["Basics"]}, paid_tier()],
    )
    catalog.set_badges(session, actor=admin, product=product, official=True, certified=True)
    accounts.set_verified(session, org=org, actor=admin, verified=True, settings=None)
    other = make_org(session, admin, "pendingco")
    accounts.invite_member(
        session, org=other, actor=admin, username="tour-customer", role="viewer", settings=None
    )

    # Anonymous visitor.
    check(browser.get("/"))
    check(browser.get("/browse", params={"q": "tour", "badge": "official"}))
    check(browser.get("/products/tourco/app"))
    check(browser.get("/login"))
    check(browser.get("/signup"))
    check(browser.get("/nowhere"), 404)
    # Links by e-mail: forgotten password, reset, verification, and a link that does not work.
    check(browser.get("/password/forgot"))
    check(submit(browser, "/password/forgot", "/password/forgot", {"email": "a@example.com"}))
    check(
        browser.get(f"/password/reset/{links._issue(session, customer, 'reset', links.RESET_TTL)}")
    )
    check(
        browser.get(f"/verify-email/{links._issue(session, customer, 'verify', links.VERIFY_TTL)}")
    )
    check(browser.get("/password/reset/not-a-token"), 400)

    # Customer.
    login(browser, "tour-customer")
    check(submit(browser, "/products/tourco/app", "/products/tourco/app/tiers/free/get"))
    check(browser.get(f"/checkout/{catalog.get_tier_by_slug(session, product, 'pro').id}"))
    check(browser.get("/my/content"))
    check(browser.get("/my/tokens"))
    check(submit(browser, "/my/tokens", "/my/tokens", {"name": "t", "scopes": "pull"}))
    check(browser.get("/my/account"))
    check(browser.get("/my/sessions"))
    check(browser.get("/publish"))
    # Two-factor sign-in: set-up with its QR code, recovery codes, the code step of log-in.
    check(browser.get("/my/two-factor"))
    enrolment = submit(browser, "/my/two-factor", "/my/two-factor/setup")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', check(enrolment))
    assert secret is not None
    code = pyotp.TOTP(secret.group(1)).now()
    confirmed = {"code": code, "current_password": PASSWORD}
    check(submit(browser, "/my/two-factor", "/my/two-factor/confirm", confirmed))
    browser.cookies.clear()
    check(submit(browser, "/login", "/login", {"login": "tour-customer", "password": PASSWORD}))
    browser.cookies.clear()

    # Publisher.
    login(browser, "tour-owner")
    check(browser.get("/publish/tourco"))
    check(browser.get("/publish/tourco/new"))
    check(browser.get("/publish/tourco/app"))
    browser.cookies.clear()

    # Administrator.
    login(browser, "tour-admin")
    check(browser.get("/admin"))
    check(browser.get("/admin/products"))
    check(browser.get("/admin/accounts"))
    check(browser.get("/admin/entitlements", params={"username": "tour-customer"}))
    assert customer.username in browser.get("/admin/entitlements?product=tourco/app").text

    missing = web_templates() - recorder.used
    assert not missing, f"templates never rendered: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(all_templates()))
def test_every_template_compiles(app: FastAPI, name: str) -> None:
    app.state.web_templates.env.get_template(name)


def test_internal_errors_render_the_error_page(app: FastAPI) -> None:
    def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers=HTML)
        assert response.status_code == 500
        assert is_html(response)
        assert "Something went wrong" in response.text
        assert "kaboom" not in response.text
        api = client.get("/boom", headers={"accept": "application/json", "x-request-id": "r-1"})
        assert api.json()["error"] == "internal_error"
        # Sent from outside the store's middleware, yet with its headers.
        assert api.headers["x-request-id"] == "r-1"
        for response in (api, client.get("/boom", headers=HTML)):
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-request-id"]


def test_bad_path_parameter_is_a_422_page(browser: TestClient, session: Session) -> None:
    make_account(session, "pathuser")
    login(browser, "pathuser")
    response = submit(browser, "/my/tokens", "/my/tokens/not-a-uuid/revoke")
    assert response.status_code == 422
    assert "Please check your input" in response.text


def test_price_formatting() -> None:
    class T:
        def __init__(self, billing: str, amount: int, currency: str = "usd") -> None:
            self.billing, self.amount_minor, self.currency = billing, amount, currency

    assert format_price(T("free", 0)) == "Free"  # type: ignore[arg-type]
    assert format_price(T("month", 4900)) == "$49.00 / month"  # type: ignore[arg-type]
    assert format_price(T("year", 123456, "eur")) == "€1,234.56 / year"  # type: ignore[arg-type]
    assert format_price(T("one_time", 1500, "jpy")) == "¥1,500 one-time"  # type: ignore[arg-type]
    assert format_money(999, "chf") == "9.99 CHF"


def test_static_files_are_served(client: TestClient) -> None:
    assert client.get("/static/store.css").status_code == 200
    assert client.get("/static/store.js").status_code == 200


def test_templates_directory_is_where_the_app_looks() -> None:
    assert Path(TEMPLATES_DIR, "base.html").is_file()
