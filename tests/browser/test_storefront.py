"""The storefront in chromium: one search in every box, price and the primary action in the
first screen of every demo product, and nothing loaded from anywhere but the store (the
``new_page`` fixture refuses and reports any other origin)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from store.demo import PRODUCTS
from tests.browser.conftest import NewPage

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def _first_result(page: Page) -> str:
    first = page.locator(".search-results .search-hit").first
    expect(first).to_be_visible()
    return first.locator(".card-title a").first.get_attribute("href") or ""


def test_the_header_box_and_the_home_box_give_the_same_answer(page: Page) -> None:
    page.goto("/")
    page.get_by_role("search", name="Search from the home page").get_by_role("searchbox").fill(
        "postgres"
    )
    page.get_by_role("search", name="Search from the home page").get_by_role(
        "button", name="Search"
    ).click()
    from_home = _first_result(page)
    page.goto("/legal/terms")
    header = page.get_by_role("search", name="Site search")
    header.get_by_label("Search products").fill("postgres")
    header.get_by_role("button", name="Search").click()
    assert _first_result(page) == from_home == "/products/northwind/pgvault"
    for q in ("pg vault", "pgv"):
        page.goto(f"/search?q={q}")
        assert _first_result(page) == "/products/northwind/pgvault", q
    page.goto("/search?q=vault")  # also names another product: found, not necessarily first
    expect(page.locator('.search-results a[href="/products/northwind/pgvault"]')).to_be_visible()
    page.goto("/browse?q=postgres")
    expect(page.locator(".grid .product-card").first).to_contain_text("PGVault")


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_price_and_action_are_in_the_first_screen(new_page: NewPage, size: dict) -> None:
    page = new_page()
    page.set_viewport_size(size)
    for spec in PRODUCTS:
        if spec.draft:  # not on sale: visitors get a 404
            continue
        page.goto(f"/products/{spec.repository}")
        for locator in (
            page.locator(".buy-box .price-line"),
            page.locator(".buy-box .buy-actions .button-primary").first,
        ):
            expect(locator).to_be_visible()
            box = locator.bounding_box()
            assert box is not None, spec.repository
            assert box["y"] + box["height"] <= size["height"], (spec.repository, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"], spec.repository


def test_main_pages_load_only_from_the_store(page: Page) -> None:
    for path in (
        "/",
        "/browse",
        "/browse?page=99",
        "/search?q=postgres",
        "/search?q=zzzzzz",
        "/products/northwind/pgvault",
        "/legal/terms",
        "/legal/contact",
        "/signup",
        "/login",
        "/api/docs",
    ):
        response = page.goto(path)
        assert response is not None and response.status < 400, path
        page.wait_for_load_state("networkidle")
    width = page.evaluate("document.documentElement.scrollWidth")
    page.goto("/search?q=" + "verylongword" * 20)
    assert page.evaluate("document.documentElement.scrollWidth") <= max(width, 1280)
