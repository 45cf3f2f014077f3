"""Home, browsing, product pages, getting a free tier and the honest "Buy" page."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.catalog import service as catalog
from store.licensing import entitlements
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier
from tests.web.helpers import is_html, login, submit


@pytest.fixture
def shelf(session: Session) -> dict[str, Any]:
    owner = make_account(session, "pubowner")
    acme = make_org(session, owner, "acme", name="Acme Corp")
    initech = make_org(session, owner, "initech")
    db = make_product(
        session,
        acme,
        owner,
        "db",
        title="Acme Database",
        categories=["databases"],
        platforms=["linux/amd64", "linux/arm64"],
    )
    proxy = make_product(
        session,
        acme,
        owner,
        "proxy",
        title="Acme Proxy",
        kind="plugin",
        tiers=[paid_tier("pro", 4900, "month", trial_days=14)],
        categories=["networking"],
    )
    cache = make_product(session, initech, owner, "cache", title="Initech Cache")
    admin = make_admin(session)
    catalog.set_badges(session, actor=admin, product=db, official=True)
    catalog.set_badges(session, actor=admin, product=cache, certified=True)
    session.refresh(acme)
    return {"owner": owner, "acme": acme, "db": db, "proxy": proxy, "cache": cache}


def test_home(browser: TestClient, shelf: dict[str, Any]) -> None:
    response = browser.get("/")
    assert response.status_code == 200
    assert is_html(response)
    assert "Featured" in response.text
    assert "Acme Database" in response.text and "Initech Cache" in response.text
    assert 'href="/browse?category=databases"' in response.text
    assert "content-security-policy" in response.headers
    assert 'id="main"' in response.text and "Skip to content" in response.text


def test_browse_filters(browser: TestClient, shelf: dict[str, Any]) -> None:
    def titles(**params: str) -> set[str]:
        response = browser.get("/browse", params=params)
        assert response.status_code == 200, response.text
        return {t for t in ("Acme Database", "Acme Proxy", "Initech Cache") if t in response.text}

    assert titles() == {"Acme Database", "Acme Proxy", "Initech Cache"}
    assert titles(kind="plugin") == {"Acme Proxy"}
    assert titles(category="databases") == {"Acme Database"}
    assert titles(pricing="paid") == {"Acme Proxy"}
    assert titles(pricing="trial") == {"Acme Proxy"}
    assert titles(pricing="free") == {"Acme Database", "Initech Cache"}
    assert titles(badge="official") == {"Acme Database"}
    assert titles(badge="certified") == {"Initech Cache"}
    assert titles(publisher="initech") == {"Initech Cache"}
    assert titles(platform="linux/arm64") == {"Acme Database"}
    assert titles(q="proxy") == {"Acme Proxy"}
    assert titles(q="acme", sort="title", kind="", badge="") == {"Acme Database", "Acme Proxy"}
    # The filters chosen stay selected, and each can be removed on its own.
    page = browser.get("/browse", params={"kind": "plugin", "q": "acme"})
    assert '<option value="plugin" selected>' in page.text
    assert 'href="/browse?q=acme"' in page.text


def test_browse_pagination(browser: TestClient, session: Session, shelf: dict[str, Any]) -> None:
    owner, acme = shelf["owner"], shelf["acme"]
    for n in range(30):
        make_product(session, acme, owner, f"bulk{n:02d}", title=f"Bulk {n:02d}")
    first = browser.get("/browse", params={"q": "bulk", "sort": "title"})
    assert "30 products" in first.text
    assert "Page 1 of 2" in first.text
    assert "Bulk 00" in first.text and "Bulk 23" in first.text and "Bulk 24" not in first.text
    assert 'href="/browse?q=bulk&amp;sort=title&amp;page=2"' in first.text
    second = browser.get("/browse", params={"q": "bulk", "sort": "title", "page": "2"})
    assert "Page 2 of 2" in second.text
    assert "Bulk 24" in second.text and "Bulk 29" in second.text and "Bulk 00" not in second.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "boat"}, "kind must be one of image, plugin"),
        ({"pricing": "cheap"}, "pricing must be one of"),
        ({"badge": "gold"}, "badge must be one of"),
        ({"page": "two"}, "page must be a whole number"),
        ({"page": "0"}, "page must be between"),
        ({"q": "x" * 201}, "The query is too long"),
    ],
)
def test_invalid_filter_is_a_400_page(
    browser: TestClient, params: dict[str, str], message: str
) -> None:
    response = browser.get("/browse", params=params)
    assert response.status_code == 400
    assert is_html(response)
    assert message in response.text
    assert "Error 400" in response.text


def test_unknown_sort_falls_back_with_a_notice(browser: TestClient, shelf: dict[str, Any]) -> None:
    response = browser.get("/browse", params={"sort": "random"})
    assert response.status_code == 200
    assert "“random” is not a sort order; sorted by relevance instead." in response.text
    page = browser.get("/search", params={"q": "proxy", "sort": "random"})
    assert page.status_code == 200 and "is not a sort order" in page.text


def test_browse_past_the_last_page_offers_the_way_back(
    browser: TestClient, shelf: dict[str, Any]
) -> None:
    response = browser.get("/browse", params={"page": "99"})
    assert response.status_code == 200
    assert "There is no page 99" in response.text
    assert 'href="/browse?page=1"' in response.text


def test_long_query_and_empty_result(browser: TestClient, shelf: dict[str, Any]) -> None:
    response = browser.get("/browse", params={"q": "zzzz" * 45})
    assert response.status_code == 200
    assert "No products match" in response.text and 'href="/browse"' in response.text


def test_product_page(browser: TestClient, shelf: dict[str, Any], session: Session) -> None:
    proxy = shelf["proxy"]
    catalog.update_product(
        session,
        actor=shelf["owner"],
        product=proxy,
        docs_url="https://docs.acme.test",
        support_url="https://help.acme.test",
        eula_url="https://acme.test/eula",
        description_md="# Fast\n\nA **proxy**.",
    )
    response = browser.get("/products/acme/proxy")
    assert response.status_code == 200
    text = response.text
    assert "Acme Proxy" in text and "Acme Corp" in text
    assert "$49.00 / month" in text
    assert "14-day free trial" in text
    assert "Unlimited seats" in text
    assert "<h1>Fast</h1>" in text and "<strong>proxy</strong>" in text
    # a plugin with nothing pushed: said so, instead of a command that cannot work
    assert "Not yet available." in text and "docker pull 127.0.0.1:5000/acme/proxy" not in text
    assert "docker plugin install" not in text and ":latest" not in text
    assert "From $49.00 / month" in text and "Start free trial: Pro, $49.00 / month" not in text
    assert 'href="https://docs.acme.test"' in text and "License agreement (EULA)" in text
    assert "Log in to pull acme/proxy." in text
    assert "Log in to buy" in text

    badges = browser.get("/products/acme/db").text
    assert "Official" in badges and "Free" in badges


def test_install_command_per_kind_and_price_line(
    browser: TestClient, shelf: dict[str, Any], session: Session
) -> None:
    from datetime import UTC, datetime

    from store.registry import hub

    for name, tag in (("acme/proxy", "2.1"), ("acme/proxy", "latest"), ("acme/db", "16")):
        hub.record_push(
            session,
            name=name,
            digest="sha256:" + "b" * 64,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=10,
            tag=tag,
            actor="pubowner",
            at=datetime.now(UTC),
        )
    make_product(
        session,
        shelf["acme"],
        shelf["owner"],
        "mixed",
        title="Acme Mixed",
        tiers=[
            {"slug": "free", "billing": "free"},
            paid_tier("biz", 99000, "year"),
            paid_tier("pro", 4900, "month"),
        ],
    )
    session.commit()
    plugin = browser.get("/products/acme/proxy").text
    assert "docker plugin install 127.0.0.1:5000/acme/proxy:latest" in plugin
    assert (
        "docker pull 127.0.0.1:5000/acme/proxy" not in plugin and "Not yet available" not in plugin
    )
    image = browser.get("/products/acme/db").text
    assert "docker pull 127.0.0.1:5000/acme/db:16" in image  # no latest: the tag there is
    assert "sha256:" + "b" * 64 in image  # the full digest, copyable
    mixed = browser.get("/products/acme/mixed").text
    assert "Free · paid plans from $49.00 / month" in mixed
    assert "Log in, then get it free" in mixed
    cards = browser.get("/browse", params={"q": "mixed"}).text
    assert "Free · paid plans from $49.00 / month" in cards and "$990.00" not in cards


def test_markdown_script_is_not_executed(
    browser: TestClient, session: Session, shelf: dict[str, Any]
) -> None:
    db = shelf["db"]
    catalog.update_product(
        session,
        actor=shelf["owner"],
        product=db,
        description_md='<script>alert("x")</script>\n\n[click](javascript:alert(1))',
        summary="<img src=x onerror=alert(1)>",
    )
    text = browser.get("/products/acme/db").text
    assert "<script>alert" not in text
    assert "&lt;script&gt;" in text
    assert 'href="javascript' not in text
    assert "<img src=x onerror" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_draft_is_404_for_strangers_and_visible_to_members(
    browser: TestClient, session: Session
) -> None:
    owner = make_account(session, "drafter")
    org = make_org(session, owner, "secretco")
    make_product(session, org, owner, "unreleased", publish=False, title="Unreleased")
    make_account(session, "stranger")

    anonymous = browser.get("/products/secretco/unreleased")
    assert anonymous.status_code == 404
    assert is_html(anonymous) and "Page not found" in anonymous.text

    login(browser, "stranger")
    assert browser.get("/products/secretco/unreleased").status_code == 404
    browser.cookies.clear()

    login(browser, "drafter")
    member = browser.get("/products/secretco/unreleased")
    assert member.status_code == 200
    assert "This is a draft" in member.text and "Edit product" in member.text


def test_get_free_tier(browser: TestClient, session: Session, shelf: dict[str, Any]) -> None:
    buyer = make_account(session, "buyer")
    login(browser, "buyer")
    page = browser.get("/products/acme/db")
    assert "No access yet." in page.text
    response = submit(browser, "/products/acme/db", "/products/acme/db/tiers/free/get")
    assert response.status_code == 200
    assert response.url.path == "/my/content"
    assert "Acme Database (Free) is in your content now." in response.text
    # Nothing pushed yet: said so instead of a pull command.
    assert "Not yet available." in response.text and "docker pull" not in response.text
    assert "docker login 127.0.0.1:5000 -u buyer" in response.text
    held = entitlements.entitlements_of(session, buyer)
    assert [e.product.repository for e in held] == ["acme/db"]
    assert f'href="/my/licenses/{held[0].id}.lic"' in response.text
    assert "Active" in response.text
    # The product page now says so.
    assert "You have access." in browser.get("/products/acme/db").text
    # Getting it again does not make a second entitlement.
    submit(browser, "/products/acme/db", "/products/acme/db/tiers/free/get")
    session.expire_all()
    assert len(entitlements.entitlements_of(session, buyer)) == 1


def test_get_requires_login(browser: TestClient, shelf: dict[str, Any]) -> None:
    page = browser.get("/products/acme/db")
    assert 'href="/login?next=/products/acme/db"' in page.text
    response = submit(
        browser,
        "/login",  # any page with a form: anonymous sessions get a token too
        "/products/acme/db/tiers/free/get",
        headers={"referer": "http://store.test/products/acme/db"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fproducts%2Facme%2Fdb"


def test_get_paid_tier_is_refused(
    browser: TestClient, session: Session, shelf: dict[str, Any]
) -> None:
    make_account(session, "sneaky")
    login(browser, "sneaky")
    response = submit(browser, "/products/acme/proxy", "/products/acme/proxy/tiers/pro/get")
    assert response.status_code == 402
    assert "This tier is paid" in response.text


def test_buy_leads_to_checkout(
    browser: TestClient, session: Session, shelf: dict[str, Any]
) -> None:
    buyer = make_account(session, "payer")
    login(browser, "payer")
    page = browser.get("/products/acme/proxy")
    tier = catalog.get_tier_by_slug(session, shelf["proxy"], "pro")
    assert f'href="/checkout/{tier.id}"' in page.text
    checkout = browser.get(f"/checkout/{tier.id}")
    assert checkout.status_code == 200
    assert "$49.00" in checkout.text and "TEST MODE" in checkout.text.upper()
    assert entitlements.entitlements_of(session, buyer) == []


def test_unknown_page_is_html_404(browser: TestClient) -> None:
    response = browser.get("/no/such/page")
    assert response.status_code == 404
    assert is_html(response)
    assert "There is nothing at this address" in response.text


def test_install_commands_name_a_pushed_tag_everywhere(
    browser: TestClient, session: Session, shelf: dict[str, Any]
) -> None:
    """My content and the hub's search results, like the product page: the command names
    latest when pushed, else the newest tag; "Not yet available" when nothing is."""
    from datetime import UTC, datetime, timedelta

    from store.registry import hub

    def push(name: str, tag: str, minutes: int) -> None:
        hub.record_push(
            session,
            name=name,
            digest="sha256:" + "c" * 64,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=10,
            tag=tag,
            actor="pubowner",
            at=datetime.now(UTC) - timedelta(minutes=minutes),
        )

    buyer = make_account(session, "installer")
    entitlements.get_free_tier(session, account=buyer, tier=shelf["db"].tiers[0])
    push("acme/db", "15", 10)
    push("acme/db", "16", 5)
    push("pubowner/tools", "v2", 1)
    hub.set_visibility(session, name="pubowner/tools", visibility="public")
    session.commit()
    login(browser, "installer")
    content = browser.get("/my/content").text
    assert "docker pull 127.0.0.1:5000/acme/db:16" in content and "Not yet available" not in content
    found = browser.get("/search", params={"q": "tools", "source": "hub"}).text
    assert "docker pull 127.0.0.1:5000/pubowner/tools:v2" in found, found
    push("pubowner/tools", "latest", 0)
    session.commit()
    found = browser.get("/search", params={"q": "tools", "source": "hub"}).text
    assert "docker pull 127.0.0.1:5000/pubowner/tools:latest" in found
    hub.record_delete(session, name="pubowner/tools", tag=None, digest="sha256:" + "c" * 64)
    session.commit()
    found = browser.get("/search", params={"q": "tools", "source": "hub"}).text
    # The repository is still found, its tags all gone.
    assert "pubowner/tools" in found
    assert "Not yet available." in found and "docker pull" not in found
