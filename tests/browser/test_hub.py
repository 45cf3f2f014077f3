"""Hub repositories in a real browser: browsing the hub, a repository's page (README, pull
command, tags with a copyable digest and platforms, pulls chart, star), its settings
(collaborators) and creating a repository. Every page passes the accessibility check, on a
phone too, and does not scroll sideways there."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.registry import hub
from store.registry.models import HubTag
from tests.browser.flows import flash, log_in
from tests.browser.support import DEMO_PASSWORD, Shots, StoreServer
from tests.browser.test_accessibility import PHONE, TOO_WIDE, axe, describe

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

REPO = "casey/notes"
DIGEST = "sha256:" + "5e" * 32


def _problems(page: Page) -> list[str]:
    found = [describe(page.url, v) for v in axe(page)]
    page.set_viewport_size(PHONE)
    found += [describe(f"{page.url} [phone]", v) for v in axe(page)]
    if wide := page.evaluate(TOO_WIDE):
        found.append(f"{page.url}: the page scrolls sideways on a phone: {wide}")
    page.set_viewport_size({"width": 1280, "height": 900})
    return found


@pytest.fixture(scope="module")
def pushed(store_server: StoreServer) -> str:
    """casey's public repository with a README and one multi-platform tag, as pushes and the
    registry's manifest make them."""
    engine = make_engine(f"sqlite:///{store_server.data_dir / 'store.db'}")
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            repo = hub.set_visibility(session, name=REPO, visibility="public")
            repo.description = "Notes, served small"
            repo.readme_md = "## Running it\n\n`docker run notes` and open port 8080."
            hub.record_push(
                session,
                name=REPO,
                digest=DIGEST,
                media_type="application/vnd.oci.image.index.v1+json",
                size=700,
                tag="1.0",
                actor="casey",
                at=utcnow() - timedelta(hours=2),
            )
            hub.record_pull(session, name=REPO, at=utcnow())
            tag = session.scalars(select(HubTag).where(HubTag.repository_id == repo.id)).one()
            tag.platforms = [
                {"os": "linux", "architecture": "amd64", "variant": "",
                 "digest": "sha256:" + "a1" * 32, "size": 3_100_000},
                {"os": "linux", "architecture": "arm64", "variant": "v8",
                 "digest": "sha256:" + "b2" * 32, "size": 2_900_000},
            ]  # fmt: skip
    finally:
        engine.dispose()
    return REPO


def test_browse_the_hub_and_open_a_repository(page: Page, pushed: str, shots: Shots) -> None:
    page.goto("/browse?source=hub")
    expect(page.get_by_role("heading", name="Browse the hub")).to_be_visible()
    problems = _problems(page)
    page.get_by_role("link", name=pushed).click()
    expect(page.get_by_role("heading", name=pushed, level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Running it")).to_be_visible()
    expect(page.get_by_label("Pull command")).to_have_text(
        f"docker pull 127.0.0.1:5000/{pushed}:1.0"
    )
    row = page.get_by_role("row").filter(has_text="1.0")
    expect(row).to_contain_text("linux/arm64/v8")
    expect(row).to_contain_text("3.1 MB")
    expect(row).to_contain_text("by casey")
    expect(row.get_by_role("button", name="Copy the digest")).to_be_visible()
    expect(page.locator("#repo-pulls-caption")).to_have_text("Pulls per day: casey/notes")
    expect(page.get_by_role("link", name="Log in to star")).to_be_visible()
    problems += _problems(page)
    shots(page, "hub-repository")
    page.goto("/r/casey/does-not-exist")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert not problems, "\n".join(problems)


def test_owner_stars_shares_and_creates(page: Page, pushed: str, shots: Shots) -> None:
    log_in(page, "casey", DEMO_PASSWORD)
    page.goto(f"/r/{pushed}")
    page.get_by_role("button", name="☆ Star").click()
    expect(page.get_by_role("button", name="★ Starred")).to_be_visible()
    expect(page.locator("#star-count")).to_contain_text("1 star")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name=f"Settings of {pushed}")).to_be_visible()
    page.get_by_label("Username").fill("nobody-here")
    page.get_by_role("button", name="Give access").click()
    expect(page.get_by_text("No account named 'nobody-here'")).to_be_visible()
    page.get_by_label("Username").fill("nora")
    page.get_by_label("Permission").select_option("write")
    page.get_by_role("button", name="Give access").click()
    expect(flash(page, f"nora has write access to {pushed}.")).to_be_visible()
    expect(page.get_by_role("cell", name="nora", exact=True)).to_be_visible()
    problems = _problems(page)
    shots(page, "hub-settings")

    page.goto("/repositories/new")
    problems += _problems(page)
    page.get_by_label("Name", exact=True).fill("drafts")
    page.get_by_label("Description").fill("Drafts before they are notes")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="casey/drafts", level=1)).to_be_visible()
    expect(page.get_by_text("Nothing has been pushed yet")).to_be_visible()
    page.goto("/my/repositories")
    expect(page.get_by_role("link", name="casey/drafts")).to_be_visible()
    expect(page.get_by_role("link", name=pushed).first).to_be_visible()
    problems += _problems(page)
    assert not problems, "\n".join(problems)
