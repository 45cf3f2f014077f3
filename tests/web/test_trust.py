"""Trust pages, terms accepted at sign-up, every sign-up error at once, no echoed keys."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.web import legal
from tests.factories import PASSWORD, make_account
from tests.web.helpers import is_html, submit


@pytest.mark.parametrize("slug", ["terms", "privacy", "refunds", "contact"])
def test_trust_pages_have_placeholders_and_footer_links(browser: TestClient, slug: str) -> None:
    page = browser.get(f"/legal/{slug}")
    assert page.status_code == 200 and is_html(page)
    assert "This page has not been written by the store" in page.text
    assert f'href="/legal/{slug}"' in browser.get("/").text
    assert browser.get("/legal/nothing").status_code == 404


def test_operator_text_is_served_sanitised(app: FastAPI, browser: TestClient) -> None:
    folder = app.state.settings.data_dir / "legal"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "terms.md").write_text("# Our terms\n\nBe **nice**. <script>alert(1)</script>")
    page = browser.get("/legal/terms")
    assert "<strong>nice</strong>" in page.text and "<script>alert" not in page.text
    assert "has not been written" not in page.text


def test_missing_pages_are_a_warning_in_production(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="store.legal")
    legal.warn_if_missing(settings.model_copy(update={"environment": "production"}))
    assert "terms.md" in caplog.text and "contact.md" in caplog.text
    caplog.clear()
    legal.warn_if_missing(settings)  # not production: quiet
    assert caplog.text == ""


def test_signup_shows_every_error_at_once(browser: TestClient, session: Session) -> None:
    response = submit(
        browser,
        "/signup",
        "/signup",
        {"username": "x", "email": "nope", "password": "short", "password_confirm": "other"},
    )
    assert response.status_code == 422
    for field in ("username", "email", "password", "password_confirm", "accept_terms"):
        assert f'id="signup-{field}-error"' in response.text, field
    assert "Correct the 5 fields marked" in response.text


def test_terms_acceptance_is_recorded(browser: TestClient, session: Session) -> None:
    response = submit(
        browser,
        "/signup",
        "/signup",
        {
            "username": "carol",
            "email": "carol@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "accept_terms": "on",
        },
    )
    assert response.status_code == 200, response.text
    account = session.scalar(select(Account).where(Account.username == "carol"))
    assert account is not None and account.terms_accepted_at is not None
    assert make_account(session, "api-made").terms_accepted_at is None


def test_a_refused_private_key_is_never_echoed(browser: TestClient, session: Session) -> None:
    from starlette.datastructures import FormData

    from store.errors import ValidationFailed
    from store.web.forms import FormState

    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----"
    form = FormData([("public_pem", key), ("name", "kept")])
    state = FormState.failed("key", form, ValidationFailed("That is a private key"))
    assert state.value("key", "public_pem") == "" and state.value("key", "name") == "kept"


def test_the_start_up_warning_knows_every_trust_page() -> None:
    """The warning at start-up (store.web.legal_files, loaded before the pages) names the
    same documents the pages serve."""
    from store.web import legal_files

    assert tuple(legal.DOCUMENTS) == legal_files.SLUGS
