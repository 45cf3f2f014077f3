"""The API documentation page in chromium: Swagger UI from the store's own files renders the
store's schema, asks nothing of another origin (the fixture refuses and reports any such
request) and trips no Content-Security-Policy violation."""

from __future__ import annotations

from playwright.sync_api import ConsoleMessage, Page, expect


def test_api_docs_render_from_the_store_alone(page: Page) -> None:
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", console)
    page.goto("/api/docs")
    expect(page.locator(".swagger-ui .title")).to_contain_text("Store")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    assert operations.count() > 20
    page.locator(".opblock-summary-path", has_text="/api/v1/search").first.click()
    expect(page.get_by_text("Try it out").first).to_be_visible()
    assert problems == [], problems  # a CSP violation is reported on the console


def test_pages_have_an_icon(page: Page) -> None:
    page.goto("/")
    icon = page.locator('link[rel="icon"]')
    assert icon.get_attribute("href") == "/static/favicon.svg"
    assert page.request.get("/static/favicon.svg").ok
    assert page.request.get("/favicon.ico").ok
