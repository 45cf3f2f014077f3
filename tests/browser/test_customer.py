"""A customer, in a real browser: sign up, find a product, get its free tier, buy paid tiers
on the test gateway (one with the 3-D Secure step), use My content (license download that
verifies offline, registry commands), access tokens, the subscription and a receipt."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from store.licensing.verify import Verifier, read_license
from tests.browser.flows import flash, pay, sign_up
from tests.browser.support import REGISTRY_HOST, Shots, StoreServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

USERNAME = "cara-e2e"


def test_customer_path(page: Page, store_server: StoreServer, shots: Shots) -> None:
    # Home, then an account.
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Container images")
    expect(page.get_by_role("search").first).to_be_visible()
    shots(page, "home")
    sign_up(page, USERNAME)
    expect(page.get_by_text("Nothing yet.")).to_be_visible()  # the empty state

    # Search from the header, open the product.
    page.get_by_label("Search products").fill("keystone cache")  # a combobox with suggestions
    page.get_by_label("Search products").press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=keystone"))
    shots(page, "search")
    page.get_by_role("link", name="Keystone in-memory cache").first.click()
    expect(page).to_have_url(re.compile(r"/products/northwind/keystone-cache$"))

    # The product page: publisher badge, plans with prices, the pull command for this host.
    expect(page.get_by_role("heading", level=1)).to_have_text("Keystone in-memory cache")
    expect(page.locator(".product-header .badge-verified")).to_be_visible()
    plans = page.locator("#tiers")
    expect(plans.locator(".tier")).to_have_count(2)
    expect(plans).to_contain_text("Free")
    expect(plans).to_contain_text("$490.00 / year")
    expect(page.get_by_label("Pull command")).to_have_text(
        f"docker pull {REGISTRY_HOST}/northwind/keystone-cache:latest"
    )
    shots(page, "product")

    # The free tier: access at once.
    page.get_by_role("button", name="Get Community").click()
    expect(page).to_have_url(re.compile(r"/my/content$"))
    expect(flash(page, "is in your content now")).to_be_visible()

    # A paid tier (a yearly subscription) with the card that succeeds.
    page.goto("/products/northwind/keystone-cache")
    page.get_by_role("link", name=re.compile(r"^Buy Business")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Business")
    shots(page, "checkout")
    pay(page, "4242 4242 4242 4242", "Subscribe")
    expect(page.get_by_text("Payment received. Thank you!")).to_be_visible()

    # A one-time purchase with the card that asks for authentication (3-D Secure): approve.
    page.goto("/products/polaris-dev/gitforge")
    page.get_by_role("link", name=re.compile(r"^Buy Perpetual license")).click()
    pay(page, "4000 0025 0000 3155", "Pay $199.00")
    expect(page.get_by_text("Your bank asks you to confirm this payment.")).to_be_visible()
    page.get_by_role("link", name="Confirm the payment").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Simulated card authentication")
    shots(page, "authenticate")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_text("Payment received. Thank you!")).to_be_visible()

    # My content: all three, registry login for this host, a license that verifies offline.
    page.get_by_role("link", name="your content").click()
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(3)
    business = rows.filter(has_text="Business")
    expect(business).to_contain_text("Keystone in-memory cache")
    expect(business).to_contain_text("Active")
    expect(rows.filter(has_text="Community")).to_contain_text("Keystone in-memory cache")
    expect(rows.filter(has_text="Perpetual license")).to_contain_text("GitForge")
    expect(page.get_by_label("Registry login command")).to_have_text(
        f"docker login {REGISTRY_HOST} -u {USERNAME}"
    )
    expect(business.get_by_label("Pull command")).to_have_text(
        f"docker pull {REGISTRY_HOST}/northwind/keystone-cache:latest"
    )
    shots(page, "my-content")
    with page.expect_download() as download_info:
        business.get_by_role("link", name="Download license").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".lic")
    jwks = httpx.get(store_server.at("/.well-known/jwks.json"), timeout=5).json()
    result = Verifier(jwks).verify(read_license(str(download.path())))
    assert result.valid, (result.verdict, result.reason)
    assert result.claims["product"]["repository"] == "northwind/keystone-cache"
    assert result.claims["tier"]["slug"] == "business"

    # An access token: shown once, copied, then only its prefix; revoked.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_text(USERNAME, exact=True).click()  # the account menu
    page.get_by_role("link", name="Access tokens").click()
    expect(page.get_by_text("You have no tokens.")).to_be_visible()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("New token").inner_text().strip()
    assert secret.startswith("stp_")
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    page.locator(".command", has=page.get_by_label("New token")).get_by_role(
        "button", name="Copy"
    ).click()
    # The clipboard holds the secret (the button says "Copied" for 1.5 s, which a busy
    # machine may finish before a look at it).
    page.wait_for_function(
        "async (secret) => (await navigator.clipboard.readText()) === secret", arg=secret
    )
    page.get_by_role("link", name="Done").click()
    token_row = page.locator("table tbody tr").filter(has_text="laptop")
    expect(token_row).to_contain_text(secret[:8])
    assert secret not in page.content()
    token_row.get_by_role("button", name="Revoke laptop").click()
    expect(flash(page, "Token 'laptop' is revoked.")).to_be_visible()
    expect(page.get_by_text("You have no tokens.")).to_be_visible()

    # My purchases: cancel the subscription at the period's end, then resume it.
    page.get_by_text(USERNAME, exact=True).click()
    page.get_by_role("link", name="Purchases and receipts").click()
    subscriptions = page.get_by_role("region", name="Subscriptions")
    subscription = subscriptions.locator("tbody tr").filter(has_text="Keystone in-memory cache")
    subscription.get_by_role("button", name="Cancel Keystone in-memory cache").click()
    expect(flash(page, "ends at the close")).to_be_visible()
    expect(subscription).to_contain_text("Ends ")
    shots(page, "purchases")
    subscription.get_by_role("button", name="Resume Keystone in-memory cache").click()
    expect(flash(page, "renews again")).to_be_visible()
    expect(subscription).not_to_contain_text("Ends ")

    # A receipt.
    order = (
        page.get_by_role("region", name="Orders").locator("tbody tr").filter(has_text="GitForge")
    )
    order.get_by_role("link", name=re.compile(r"\S")).last.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Receipt")
    expect(page.get_by_role("main")).to_contain_text("$199.00")
    expect(page.get_by_role("main")).to_contain_text("Polaris Open Tools")
    shots(page, "receipt")

    # What was bought says so: on the product page instead of Buy, on cards, in search.
    page.goto("/products/northwind/keystone-cache")
    expect(page.locator(".buy-box")).to_contain_text("Your plan — manage")
    expect(page.get_by_role("link", name=re.compile(r"^Buy "))).to_have_count(0)
    page.goto("/search?q=keystone")
    hit = page.locator(".search-hit", has_text="Keystone in-memory cache")
    expect(hit.locator(".pill-owned")).to_contain_text("Your plan")
    page.goto("/browse?q=gitforge")
    card = page.locator(".product-card", has_text="GitForge")
    expect(card.locator(".pill-owned")).to_contain_text("You own this")
