"""Automated builds in a real browser: a publisher links a Git source, sees the webhook
secret once, starts a build, and watches its log grow on the build page as the worker
writes it (here the test writes the log, as a worker would); the page shows the outcome
when the build ends. Both pages pass the accessibility check, on a phone too."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from store.builds.models import Build, BuildLogChunk
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from tests.browser.flows import flash, log_in
from tests.browser.support import DEMO_PASSWORD, Shots, StoreServer
from tests.browser.test_accessibility import PHONE, TOO_WIDE, axe, describe

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

REPO = "northwind/pgvault"
DIGEST = "sha256:" + "ab" * 32


def _problems(page: Page) -> list[str]:
    found = [describe(page.url, v) for v in axe(page)]
    page.set_viewport_size(PHONE)
    found += [describe(f"{page.url} [phone]", v) for v in axe(page)]
    if wide := page.evaluate(TOO_WIDE):
        found.append(f"{page.url}: the page scrolls sideways on a phone: {wide}")
    page.set_viewport_size({"width": 1280, "height": 900})
    return found


def test_configure_start_and_follow_a_build(
    page: Page, store_server: StoreServer, shots: Shots
) -> None:
    log_in(page, "nora", DEMO_PASSWORD)
    page.goto(f"/r/{REPO}/builds")
    expect(page.get_by_role("heading", name=f"Automated builds of {REPO}")).to_be_visible()
    page.get_by_label("Git repository URL").fill("https://git.example.com/northwind/pgvault.git")
    page.get_by_role("textbox", name="Build rules").fill("branch main latest\ntag v* {ref}")
    page.get_by_role("button", name="Save").click()
    expect(flash(page, "The build settings are saved.")).to_be_visible()
    expect(page.get_by_text("The webhook secret")).to_be_visible()
    problems = _problems(page)
    shots(page, "builds-settings")

    page.get_by_role("button", name="Build now").click()
    expect(flash(page, "Build of refs/heads/main queued.")).to_be_visible()
    expect(page.locator("#build-status")).to_contain_text("Queued")
    build_id = uuid.UUID(page.url.rsplit("/", 1)[1])
    problems += _problems(page)

    engine = make_engine(f"sqlite:///{store_server.data_dir / 'store.db'}")
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as session:
            build = session.scalars(select(Build).where(Build.id == build_id)).one()
            build.status, build.started_at = "running", utcnow()
            session.add(BuildLogChunk(build_id=build_id, seq=0, text="STEP 1/2: FROM scratch\n"))
        expect(page.locator("#build-log")).to_contain_text("STEP 1/2: FROM scratch", timeout=10_000)
        with session_scope(factory) as session:
            session.add(BuildLogChunk(build_id=build_id, seq=1, text="==> succeeded\n"))
            build = session.scalars(select(Build).where(Build.id == build_id)).one()
            build.status, build.finished_at = "succeeded", utcnow()
            build.commit_sha, build.digest = "c" * 40, DIGEST
        # the page reloads once the build has ended: the outcome, the digest, pull command
        expect(page.locator("#build-status")).to_contain_text("Succeeded", timeout=10_000)
        expect(page.locator("#build-digest")).to_have_text(DIGEST)
        expect(page.locator("#build-log")).to_contain_text("==> succeeded")
        expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    finally:
        engine.dispose()
    shots(page, "build-log")
    page.goto(f"/r/{REPO}/builds")
    expect(page.get_by_role("cell", name="Succeeded")).to_be_visible()
    assert not problems, "\n".join(problems)
