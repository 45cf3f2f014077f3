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
    # Swagger UI renders a large schema's operations only near the viewport: scroll through
    # the page and every operation of the schema it loaded must have been rendered on the way.
    in_schema = page.evaluate("window.ui.specSelectors.operations().size")
    assert in_schema > 100
    seen: set[str] = set()
    at_end = 0
    while at_end < 5:
        seen |= set(page.evaluate("[...document.querySelectorAll('.opblock')].map(e => e.id)"))
        page.mouse.wheel(0, 600)
        page.wait_for_timeout(50)
        bottom = "window.scrollY + window.innerHeight >= document.body.scrollHeight - 2"
        at_end = at_end + 1 if page.evaluate(bottom) else 0
    assert len(seen) >= in_schema, (len(seen), in_schema)
    search = page.locator(".opblock-summary-path", has_text="/api/v1/search").first
    page.evaluate("window.scrollTo(0, 0)")
    for _ in range(200):  # down to the search operations, rendered once near the viewport
        if search.count():
            break
        page.mouse.wheel(0, 600)
        page.wait_for_timeout(50)
    search.click()
    expect(page.get_by_text("Try it out").first).to_be_visible()
    assert problems == [], problems  # a CSP violation is reported on the console


def test_pages_have_an_icon(page: Page) -> None:
    page.goto("/")
    icon = page.locator('link[rel="icon"]')
    assert icon.get_attribute("href") == "/static/favicon.svg"
    assert page.request.get("/static/favicon.svg").ok
    assert page.request.get("/favicon.ico").ok
