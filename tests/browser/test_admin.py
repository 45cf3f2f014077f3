"""An administrator, in a real browser: verify a publisher, suspend and reinstate a product,
refund an order in full, and revoke an entitlement.

(Reviewing certification requests and the audit log: test_certification.py.)
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.flows import flash, log_in
from tests.browser.support import DEMO_PASSWORD, Shots, StoreServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_admin_path(page: Page, store_server: StoreServer, shots: Shots) -> None:
    log_in(page, "operator", DEMO_PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Administration")
    shots(page, "admin")

    # Verify a publisher.
    orgs = page.get_by_role("region", name="All organizations")
    orgs.get_by_role("button", name="Verify polaris-dev").click()
    expect(flash(page, "polaris-dev is verified.")).to_be_visible()
    expect(orgs.locator("tr", has_text="polaris-dev").locator(".badge-verified")).to_be_visible()

    # Suspend a product with a reason, then reinstate it.
    tabs = page.get_by_role("navigation", name="Administration")
    tabs.get_by_role("link", name="Products").click()
    page.get_by_label("Search", exact=True).fill("meshnet")
    page.get_by_role("button", name="Filter").click()
    row = page.locator("tbody tr", has_text="polaris-dev/meshnet")
    row.get_by_label("Reason for suspending polaris-dev/meshnet").fill("Reported as malware")
    row.get_by_role("button", name="Suspend").click()
    expect(flash(page, "polaris-dev/meshnet is suspended now.")).to_be_visible()
    expect(row).to_contain_text("Reported as malware")
    page.goto("/products/polaris-dev/meshnet")
    expect(page.get_by_text("This product is suspended: Reported as malware.")).to_be_visible()
    page.go_back()
    row.get_by_role("button", name="Reinstate").click()
    expect(flash(page, "polaris-dev/meshnet is published now.")).to_be_visible()
    expect(row.locator(".status")).to_have_text("Published")

    # Refund an order in full: the customer's access goes with it.
    tabs.get_by_role("link", name="Orders").click()
    order_id = str(store_server.seeded.refund_order_id)
    page.locator(f'a[href="/admin/orders/{order_id}"]').click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(order_id)
    expect(page.locator(".facts")).to_contain_text("Paid")
    page.get_by_role("button", name="Refund").click()
    expect(flash(page, "Refunded.")).to_be_visible()
    facts = page.locator(".facts")
    expect(facts).to_contain_text("Refunded")
    expect(facts).to_contain_text("$499.00")
    expect(facts.locator(".status-revoked")).to_be_visible()  # the entitlement
    expect(page.get_by_role("heading", name="Refund")).to_have_count(0)
    shots(page, "refunded-order")

    # Revoke an entitlement (the demo customer's granted Vault Gate license).
    tabs.get_by_role("link", name="Entitlements").click()
    page.locator("#e-username").fill("casey")
    page.get_by_role("button", name="Look up").click()
    expect(page).to_have_url(re.compile(r"username=casey"))
    grant = page.locator("tbody tr", has_text="ironclad/vault-gate")
    grant.get_by_label("Reason").fill("License terms breached")
    grant.get_by_role("button", name="Revoke").click()
    expect(flash(page, "Entitlement revoked.")).to_be_visible()
    expect(grant.locator(".status")).to_have_text("Revoked")
    expect(grant).to_contain_text("License terms breached")
    shots(page, "entitlements")
