"""My content, invitations, personal access tokens and account settings."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from tests.factories import PASSWORD, make_account, make_org
from tests.web.helpers import login, submit


def test_token_secret_is_shown_once(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "tokenuser")
    login(browser, "tokenuser")
    created = submit(
        browser,
        "/my/tokens",
        "/my/tokens",
        {"name": "laptop", "scopes": ["pull", "api"], "expires_days": "30"},
    )
    assert created.status_code == 200
    assert created.headers["cache-control"] == "no-store"
    secret = re.search(r"stp_[0-9A-Za-z]{36}", created.text)
    assert secret is not None
    assert "will not be shown again" in created.text
    assert "docker login 127.0.0.1:5000 -u tokenuser" in created.text

    token = accounts.resolve_token(session, secret.group(0))
    assert token is not None and token.scopes == ["api", "pull"]
    assert token.expires_at is not None

    listing = browser.get("/my/tokens")
    assert "laptop" in listing.text
    assert secret.group(0) not in listing.text
    assert token.prefix in listing.text

    revoked = submit(browser, "/my/tokens", f"/my/tokens/{token.id}/revoke")
    assert "Token &#39;laptop&#39; is revoked." in revoked.text
    assert accounts.list_tokens(session, account=owner) == []


def test_token_form_errors_keep_input(browser: TestClient, session: Session) -> None:
    make_account(session, "tokenerr")
    login(browser, "tokenerr")
    no_scope = submit(browser, "/my/tokens", "/my/tokens", {"name": "ci", "expires_days": "7"})
    assert no_scope.status_code == 422
    assert "Choose at least one scope" in no_scope.text
    assert 'value="ci"' in no_scope.text and 'value="7"' in no_scope.text
    bad_days = submit(
        browser, "/my/tokens", "/my/tokens", {"name": "ci", "scopes": "pull", "expires_days": "x"}
    )
    assert bad_days.status_code == 422
    assert 'id="token-expires_days-error"' in bad_days.text
    # The scope the user ticked stays ticked.
    assert 'name="scopes" value="pull" checked' in bad_days.text
    assert 'name="scopes" value="api">' in bad_days.text


def test_other_peoples_tokens_cannot_be_revoked(browser: TestClient, session: Session) -> None:
    victim = make_account(session, "victim")
    issued = accounts.create_token(
        session, kind="personal", name="v", scopes=["pull"], created_by=victim
    )
    make_account(session, "mallory")
    login(browser, "mallory")
    response = submit(browser, "/my/tokens", f"/my/tokens/{issued.token.id}/revoke")
    assert response.status_code == 404
    session.refresh(issued.token)
    assert issued.token.revoked_at is None


def test_invitation_accept_and_decline(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "orgowner")
    org = make_org(session, owner, "teamco")
    other = make_org(session, owner, "otherco")
    make_account(session, "newbie")
    accounts.invite_member(
        session, org=org, actor=owner, username="newbie", role="editor", settings=None
    )
    accounts.invite_member(
        session, org=other, actor=owner, username="newbie", role="viewer", settings=None
    )

    login(browser, "newbie")
    content = browser.get("/my/content")
    assert "Join <strong>Teamco</strong>" in content.text
    invitations = accounts.pending_invitations(session, accounts.find_account(session, "newbie"))  # type: ignore[arg-type]
    by_org = {i.organization.slug: i for i in invitations}

    accepted = submit(browser, "/my/content", f"/my/invitations/{by_org['teamco'].id}/accept")
    assert accepted.url.path == "/publish/teamco"
    assert "You joined teamco as editor." in accepted.text
    assert "New product" in accepted.text

    declined = submit(browser, "/my/content", f"/my/invitations/{by_org['otherco'].id}/decline")
    assert "You declined the invitation to otherco." in declined.text
    assert browser.get("/publish/otherco").status_code == 404


def test_registry_log_ins_are_listed_and_revocable(browser: TestClient, session: Session) -> None:
    from store.config import Settings
    from store.db import utcnow
    from store.registry import refresh
    from store.registry.grants import Principal

    owner = make_account(session, "loginuser")
    pat = accounts.create_token(
        session, kind="personal", name="laptop", scopes=["pull"], created_by=owner
    ).token
    principal = Principal(
        kind="account",
        subject="loginuser",
        account_id=owner.id,
        token_id=pat.id,
        extra={"token_kind": "personal"},
    )
    secret = refresh.issue(session, Settings(), principal, client_id="docker-cli", now=utcnow())
    assert secret is not None
    session.commit()
    login(browser, "loginuser")
    listing = browser.get("/my/tokens")
    assert "Registry log-ins" in listing.text and "docker-cli" in listing.text
    assert secret[:12] in listing.text and secret not in listing.text
    assert f"token laptop (<code>{pat.prefix}…</code>)" in listing.text
    (login_row,) = [t for t in accounts.list_tokens(session, account=owner) if t.kind == "refresh"]
    submit(browser, "/my/tokens", f"/my/tokens/{login_row.id}/revoke")
    session.expire_all()
    assert [t.kind for t in accounts.list_tokens(session, account=owner)] == ["personal"]


def test_password_form_errors_stand_beside_their_fields(
    browser: TestClient, session: Session
) -> None:
    make_account(session, "keeper")
    session.commit()
    login(browser, "keeper")
    new = {"new_password": "a brand new password", "new_password_confirm": "a brand new password"}
    wrong = submit(
        browser, "/my/account", "/my/account/password", {"current_password": "not it", **new}
    )
    assert wrong.status_code == 422
    assert re.search(r'id="password-current_password-error">The current password', wrong.text)
    mismatch = submit(
        browser,
        "/my/account",
        "/my/account/password",
        {**new, "current_password": PASSWORD, "new_password_confirm": "something else"},
    )
    assert mismatch.status_code == 422
    assert re.search(r'id="password-new_password_confirm-error">The two new', mismatch.text)
    short = submit(
        browser,
        "/my/account",
        "/my/account/password",
        {"current_password": PASSWORD, "new_password": "short", "new_password_confirm": "short"},
    )
    assert short.status_code == 422
    assert re.search(r'id="password-new_password-error">Passwords must be at least', short.text)
    assert "a brand new password" not in wrong.text + mismatch.text  # never echoed
    # Nothing changed: the old password still logs in.
    browser.cookies.clear()
    login(browser, "keeper")
