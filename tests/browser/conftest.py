"""Browser tests: the store under `store serve` on a free 127.0.0.1 port with a fresh data
directory (SQLite), the demo catalog, and Debian's chromium driven by Playwright.

One server for the whole session (seeding and starting it once keeps the suite quick); each
test gets its own browser context (cookies), so tests do not see each other's logins. Each
test uses accounts and organizations of its own or demo data nobody else changes.

Screenshots go to ``test-output/<test name>/``: always on failure, and at every ``shot()``
when ``STORE_SCREENSHOTS=1``. Nothing outside 127.0.0.1 is contacted (chromium runs with
its background networking off, and every page of the store loads only from the store).
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser import seed
from tests.browser.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DEMO_PASSWORD,
    REGISTRY_HOST,
    Shots,
    StoreServer,
    output_dir,
)
from tests.e2e.registry_env import clean_env, free_port, start, wait_http

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Page,
        Response,
        Route,
        sync_playwright,
    )
except ImportError:  # pragma: no cover (the test extras install it)
    sync_playwright = None  # type: ignore[assignment]

MISSING = [
    what
    for what, ok in (
        ("the playwright package", sync_playwright is not None),
        (f"chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
    )
    if not ok
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in item.nodeid.replace("\\", "/") and MISSING:
            item.add_marker(pytest.mark.skip(reason=f"missing: {', '.join(MISSING)}"))


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreServer]:
    """`store serve` on a fresh SQLite data directory with the demo catalog and a few extra
    facts (pull counts, a paid order) loaded before it starts."""
    home = tmp_path_factory.mktemp("browser-store")
    data_dir = home / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_PUBLIC_URL": url,
            "STORE_REGISTRY_URL": f"http://{REGISTRY_HOST}",
            "STORE_ENVIRONMENT": "development",
            "STORE_BILLING_GATEWAY": "test",
        }
    )
    seeded = seed.store(data_dir, demo_password=DEMO_PASSWORD, registry_host=REGISTRY_HOST)
    argv = [
        sys.executable,
        "-m",
        "store.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = start("store", argv, env=env, cwd=home, logs=home)
    try:
        # A busy machine (CI runs suites side by side) can take a while to migrate and start.
        wait_http(f"{url}/static/store.css", timeout=120, proc=process.proc)
        yield StoreServer(url, data_dir, process, seeded)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Per module, not per session: Playwright's sync API keeps an event loop running in
    # this thread while it is open, and a later test file on the same worker that runs
    # its own loop (asyncio.run) must not find one.
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(output_dir(request.node))


def _on_failure(
    request: pytest.FixtureRequest, shots: Shots, server: StoreServer, *, force: bool = False
) -> None:
    """Screenshots of the test's open pages and the server's log, in its output directory."""
    report = getattr(request.node, "report_call", None)
    if not force and (report is None or not report.failed):
        return
    shots.directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.process.log_path, shots.directory / "store.log")
    for i, page in enumerate(shots.pages):
        if page.is_closed():
            continue
        try:
            path = shots.save(page, f"failure-{i}")
            print(f"failure screenshot of {page.url}: {path}")
        except Exception as exc:  # a screenshot must never hide the failure itself
            print(f"could not save a failure screenshot: {exc}")


NewPage = Callable[[], "Page"]


@pytest.fixture
def new_page(
    request: pytest.FixtureRequest, browser: Browser, store_server: StoreServer, shots: Shots
) -> Iterator[NewPage]:
    """Open a page in a fresh browser context (its own cookies); closed after the test.
    A request for anything outside the store is refused and fails the test."""
    contexts: list[BrowserContext] = []
    outside: list[str] = []
    broken: list[str] = []  # server errors: they fail the test even if the page looked fine

    def watch(response: Response) -> None:
        if response.status >= 500:
            broken.append(f"{response.status} {response.request.method} {response.url}")

    def refuse(route: Route) -> None:
        outside.append(route.request.url)
        route.abort()

    def open_page() -> Page:
        context = browser.new_context(
            base_url=store_server.url,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        context.set_default_timeout(10_000)
        context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), refuse)
        contexts.append(context)
        page = context.new_page()
        page.on("response", watch)
        shots.pages.append(page)
        return page

    yield open_page
    _on_failure(request, shots, store_server, force=bool(broken))
    for context in contexts:
        context.close()
    assert not outside, f"pages asked for things outside the store: {outside}"
    assert not broken, f"the store answered with server errors (see store.log): {broken}"


@pytest.fixture
def page(new_page: NewPage) -> Page:
    return new_page()
