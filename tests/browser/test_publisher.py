"""A publisher, in a real browser: sign up, create an organization, invite a member, create a
product with a free and a paid tier, publish it, make a robot token for CI, read the push
instructions, and see the pulls and sales charts.

(Registering a signing key, signing and asking for certification: test_certification.py.)
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.flows import confirm_email, flash, pay, sign_up
from tests.browser.seed import PUBLISHER_ORG as ORG
from tests.browser.seed import PUBLISHER_PRODUCT as NAME
from tests.browser.support import REGISTRY_HOST, Shots, StoreServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

USERNAME = "pat-e2e"


def add_tier(page: Page, slug: str, name: str, billing: str, price: str = "") -> None:
    add = page.locator("details", has=page.locator("summary", has_text="Add a tier"))
    if add.get_attribute("open") is None:
        add.locator("summary").click()
    page.locator("#tier-new-slug").fill(slug)
    page.locator("#tier-new-name").fill(name)
    page.locator("#tier-new-billing").select_option(label=billing)
    if price:
        page.locator("#tier-new-price").fill(price)
    add.get_by_role("button", name="Add tier").click()
    expect(flash(page, "Tier added.")).to_be_visible()


def test_publisher_path(page: Page, store_server: StoreServer, shots: Shots) -> None:
    sign_up(page, USERNAME)
    # Publishing needs a confirmed address: the link from the sign-up mail.
    confirm_email(page, store_server.data_dir, USERNAME)

    # An organization.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Publish").click()
    expect(page.get_by_text("You are not in any organization yet.")).to_be_visible()
    page.get_by_label("Namespace").fill(ORG)
    page.get_by_label("Display name").fill("Acme End-to-End")
    page.get_by_role("button", name="Create organization").click()
    expect(page).to_have_url(re.compile(rf"/publish/{ORG}$"))
    expect(flash(page, f"Organization {ORG} is created")).to_be_visible()
    expect(page.get_by_text("No products yet.")).to_be_visible()

    # Invite a member (the demo customer).
    invite = page.locator("form", has=page.get_by_role("heading", name="Invite a member"))
    invite.get_by_label("Username").fill("casey")
    invite.get_by_label("Role").select_option("viewer")
    invite.get_by_role("button", name="Invite").click()
    expect(flash(page, "casey is invited as viewer.")).to_be_visible()
    expect(page.get_by_role("heading", name="Pending invitations")).to_be_visible()

    # A product: a draft with a free and a paid tier, then published.
    page.get_by_role("link", name="New product").click()
    page.get_by_label("Kind").select_option("image")
    page.get_by_label("Repository name").fill(NAME)
    page.get_by_label("Title").fill("Widget Server")
    page.get_by_label("Summary").fill("Widgets, served fast, for browser tests.")
    page.get_by_label("Categories").fill("developer-tools")
    page.get_by_role("button", name="Create draft").click()
    expect(page).to_have_url(re.compile(rf"/publish/{ORG}/{NAME}$"))
    expect(flash(page, "is created as a draft")).to_be_visible()
    add_tier(page, "community", "Community", "Free")
    add_tier(page, "pro", "Pro", "Monthly subscription", "19.00")
    expect(page.get_by_role("region", name="Tiers and prices")).to_contain_text("$19.00 / month")
    page.get_by_role("button", name="Publish").click()
    expect(flash(page, "Published")).to_be_visible()
    expect(page.locator(".page-header .status")).to_have_text("Published")

    # Push instructions for this store's registry, with copy buttons.
    image = f"{REGISTRY_HOST}/{ORG}/{NAME}"
    push = page.get_by_role("region", name="Push images")
    expect(push.get_by_label("Registry login command")).to_have_text(
        f'echo "$STORE_TOKEN" | docker login {REGISTRY_HOST} -u {ORG} --password-stdin'
    )
    expect(push.get_by_label("Tag command")).to_have_text(f"docker tag my-image:1.0 {image}:1.0")
    expect(push.get_by_label("Push command")).to_have_text(f"docker push {image}:1.0")
    expect(push.get_by_role("button", name="Copy")).to_have_count(3)
    # The repository's pulls (recorded before it was listed).
    pulls = page.get_by_role("img", name=f"Pulls per day: {ORG}/{NAME}")
    expect(pulls).to_be_visible()
    expect(pulls.locator("rect.chart-bar")).to_have_count(30)
    shots(page, "product-edit")

    # The listing is public now, with both tiers.
    page.get_by_role("link", name="View page").click()
    expect(page.locator("#tiers .tier")).to_have_count(2)
    expect(page.locator("#tiers")).to_contain_text("$19.00 / month")

    # A robot token for CI: shown once, with the registry login for the namespace.
    page.goto(f"/publish/{ORG}")
    robot = page.locator("form", has=page.get_by_role("heading", name="New robot token"))
    robot.get_by_label("Name").fill("ci")
    robot.get_by_role("button", name="Create robot token").click()
    assert page.get_by_label("New token").inner_text().startswith("str_")
    expect(page.get_by_label("Registry login command")).to_have_text(
        f"docker login {REGISTRY_HOST} -u {ORG}"
    )
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_role("region", name="Robot tokens")).to_contain_text("ci")

    # Charts: pulls of every repository; no sales yet.
    activity = page.get_by_role("region", name="Activity")
    org_pulls = activity.get_by_role("img", name=f"Pulls per day: all repositories of {ORG}")
    expect(org_pulls).to_be_visible()
    total = store_server.seeded.pulls[f"{ORG}/{NAME}"]
    expect(activity).to_contain_text(f"{total:,} in all")
    expect(activity.get_by_text("No sales yet.")).to_be_visible()
    activity.get_by_text("Show the numbers").click()
    expect(activity.locator(".chart-data tbody tr")).to_have_count(30)

    # A first sale (the publisher tries the checkout of the paid tier), then the sales charts.
    page.goto(f"/products/{ORG}/{NAME}")
    page.get_by_role("link", name=re.compile(r"^Buy Pro")).click()
    pay(page, "4242 4242 4242 4242", "Subscribe")
    expect(page.get_by_text("Payment received. Thank you!")).to_be_visible()
    page.goto(f"/publish/{ORG}")
    sales = page.get_by_role("img", name="Net sales per month (USD)")
    expect(sales).to_be_visible()
    expect(sales.locator("rect.chart-bar")).to_have_count(1)
    shots(page, "org")
    page.get_by_role("link", name="All sales by month, product and tier").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sales of Acme End-to-End")
    expect(page.get_by_role("img", name="Net sales per month (USD)")).to_be_visible()
    expect(page.get_by_role("main")).to_contain_text("$19.00 net")
    shots(page, "sales")
