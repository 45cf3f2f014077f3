"""Accessibility check: axe-core on the key pages of each kind of user; any violation, of
any impact, fails. Pages marked so are checked in light and dark colour schemes at desktop
and phone widths, the rest in light at desktop width.

axe.min.js comes from the npm registry (scripts/test installs it under .cache/node; set
STORE_AXE_JS to use another copy). It is evaluated in the page through the DevTools
protocol, which the pages' Content-Security-Policy does not apply to: the pages themselves
still load no inline script.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.flows import log_in
from tests.browser.seed import CERT_OWNER
from tests.browser.support import AXE_JS, DEMO_PASSWORD, Shots

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not AXE_JS.is_file(),
        reason=f"axe-core is not installed at {AXE_JS} "
        "(npm install --no-save --prefix .cache/node axe-core@4)",
    ),
]

FAILING_IMPACTS = ("minor", "moderate", "serious", "critical")
AXE_OPTIONS = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"],
    },
    "resultTypes": ["violations"],
}

# Who looks (a visitor, or a demo account logged in first) at which pages. An entry is a
# path, optionally the name of a link on it to follow (pages whose address holds an id; a
# tuple: one link after the other), and whether to check it in both colour schemes at both
# widths (the stylesheet is shared, so a few pages stand for the rest there).
Entry = tuple[str, str | tuple[str, ...] | None, bool]
TRACEWISE_BILLING = "Billing of Tracewise distributed tracing"
PAGES: dict[str, list[Entry]] = {
    "visitor": [
        ("/", None, True),
        ("/browse", None, False),
        ("/browse?category=databases&pricing=free", None, False),
        ("/products/northwind/pgvault", None, True),
        ("/search?q=postgres", None, True),
        ("/search?q=zzzzunfindable", None, False),
        ("/login", None, False),
        ("/signup", None, False),
        ("/no/such/page", None, False),
    ],
    "casey": [
        ("/", None, True),  # cards of what casey owns (seed) say so
        ("/search?q=blockstore", None, False),
        ("/my/content", None, True),
        ("/products/northwind/pgvault", "Buy Business", True),  # the checkout (TEST MODE)
        ("/my/purchases", None, False),
        ("/my/purchases", TRACEWISE_BILLING, True),  # a subscription's billing (seed)
        ("/my/purchases", (TRACEWISE_BILLING, "Review the change to Pro"), False),
        ("/my/tokens", None, False),
        ("/my/account", None, False),
        ("/publish", None, False),
    ],
    "nora": [
        ("/publish/northwind", None, True),
        ("/publish/northwind/pgvault", None, False),
        ("/publish/northwind/-/sales", None, False),
        ("/publish/northwind/-/coupons", None, False),
        ("/publish/northwind/new", None, False),
        ("/publish/northwind/-/signing", None, False),  # with a registered key (seed)
        ("/publish/northwind/-/audit", None, False),
    ],
    # The certification test's publisher: a tag pushed, a version waiting for review.
    CERT_OWNER: [
        ("/publish/certco-e2e/doohickey/certification", None, True),
        ("/products/certco-e2e/doohickey", None, False),
    ],
    "operator": [
        ("/admin", None, True),
        ("/admin/products", None, False),
        ("/admin/accounts", None, False),
        ("/admin/orders", None, False),
        ("/admin/entitlements?username=casey", None, False),
        ("/admin/certification", None, False),
        ("/admin/certification", "Doohickey Daemon", True),  # an unsigned version's review
        ("/admin/audit", None, False),
        ("/admin/audit?action=auth.login&verify=1", None, False),
    ],
}
# What sticks out on the right when the page scrolls sideways (empty when it does not).
TOO_WIDE = """() => {
  if (document.documentElement.scrollWidth <= window.innerWidth + 1) return "";
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const right = el.getBoundingClientRect().right;
    if (right > window.innerWidth + 1) out.push(`${el.tagName.toLowerCase()}.${el.className}`);
  }
  return out.slice(0, 8).join(", ") || "?";
}"""
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def axe(page: Page) -> list[dict[str, Any]]:
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result = page.evaluate(f"axe.run(document, {json.dumps(AXE_OPTIONS)})")
    return [v for v in result["violations"] if v["impact"] in FAILING_IMPACTS]


def describe(where: str, violation: dict[str, Any]) -> str:
    targets = ", ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
    return f"{where}: {violation['id']} ({violation['impact']}): {violation['help']} — {targets}"


@pytest.mark.parametrize("who", list(PAGES))
def test_key_pages_have_no_accessibility_violations(who: str, page: Page, shots: Shots) -> None:
    if who != "visitor":
        log_in(page, who, DEMO_PASSWORD)
    problems: list[str] = []
    for path, follow, more in PAGES[who]:
        page.goto(path)
        for name in (follow,) if isinstance(follow, str) else follow or ():
            # Check the page the link leads to, not the one still shown while it loads.
            with page.expect_navigation(wait_until="load"):
                page.get_by_role("link", name=name).first.click()
        expect(page.locator("main#main")).to_be_visible()
        variants = [("light", DESKTOP)]
        if more:
            variants += [("dark", DESKTOP), ("light", PHONE), ("dark", PHONE)]
        for scheme, viewport in variants:
            page.set_viewport_size(viewport)
            page.emulate_media(color_scheme=scheme)
            where = f"{page.url} [{scheme}, {viewport['width']}px]"
            found = axe(page)
            problems += [describe(where, v) for v in found]
            if viewport is PHONE and (wide := page.evaluate(TOO_WIDE)):
                problems.append(f"{where}: the page scrolls sideways on a phone: {wide}")
            if found:
                shots.save(page, f"a11y-{len(problems)}")
        page.set_viewport_size(DESKTOP)
        page.emulate_media(color_scheme="light")
    assert not problems, "\n".join(problems)
