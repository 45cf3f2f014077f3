"""Turning two-factor sign-in on needs the current password, not a session alone (a stolen
cookie), and ends the sessions the password alone made: someone logged in elsewhere with a
stolen password is logged out, and the browser that turned it on stays logged in."""

from __future__ import annotations

import re

import pyotp
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account, WebSession
from store.db import utcnow
from tests.factories import PASSWORD, make_account
from tests.web.helpers import HTML, csrf_of, login, submit


def _browser(app: FastAPI) -> TestClient:
    return TestClient(app, base_url="http://store.test", headers=HTML)


def _logged_in(client: TestClient) -> bool:
    return client.get("/my/account", follow_redirects=False).status_code == 200


def _code(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(utcnow()))


def test_turning_two_factor_on_ends_the_other_sessions(app: FastAPI, session: Session) -> None:
    account = make_account(session, "guarded")
    session.commit()
    with _browser(app) as owner, _browser(app) as thief:
        _turn_on_with_a_thief_logged_in(session, account, owner, thief)


def _turn_on_with_a_thief_logged_in(
    session: Session, account: Account, owner: TestClient, thief: TestClient
) -> None:
    login(owner, account.username)
    login(thief, account.username)  # the same password, typed somewhere else

    page = submit(owner, "/my/two-factor", "/my/two-factor/setup")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret is not None
    done = owner.post(
        "/my/two-factor/confirm",
        data={
            "code": _code(secret.group(1)),
            "current_password": PASSWORD,
            "csrf_token": csrf_of(page.text),
        },
    )
    assert done.status_code == 200 and "Two-factor sign-in is on" in done.text

    assert not _logged_in(thief)
    assert _logged_in(owner)
    session.expire_all()
    live = session.scalars(
        select(WebSession).where(WebSession.account_id == account.id, WebSession.ended_at.is_(None))
    ).all()
    assert len(live) == 1
    ended = session.scalars(
        select(WebSession.end_reason).where(
            WebSession.account_id == account.id, WebSession.ended_at.is_not(None)
        )
    ).all()
    assert ended == ["two_factor"]
    # The owner's browser goes on as before: its forms still work.
    changed = submit(owner, "/my/account", "/my/account/profile", {"display_name": "G"})
    assert changed.status_code == 200


def _set_up(client: TestClient) -> tuple[str, str]:
    """Start the set-up: the secret shown and the page's CSRF token."""
    page = submit(client, "/my/two-factor", "/my/two-factor/setup")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret is not None
    return secret.group(1), csrf_of(page.text)


def test_a_session_without_the_password_cannot_turn_two_factor_on(
    client: TestClient, session: Session
) -> None:
    """A stolen cookie alone must not put the account behind a second factor the thief
    holds (the owner locked out, the recovery codes the thief's)."""
    account = make_account(session, "cookie-only")
    session.commit()
    login(client, account.username)
    secret, token = _set_up(client)
    for password in ("", "not the password"):
        refused = client.post(
            "/my/two-factor/confirm",
            data={"code": _code(secret), "current_password": password, "csrf_token": token},
        )
        assert refused.status_code == 422 and "current password is not correct" in refused.text
        assert 'id="confirm-current_password-error"' in refused.text
        session.expire_all()
        assert session.get(Account, account.id).totp_enabled_at is None  # type: ignore[union-attr]

    # Wrong passwords count as wrong codes do: the limit answers 429, right password or not.
    statuses = []
    for _ in range(11):
        response = client.post(
            "/my/two-factor/confirm",
            data={"code": "000000", "current_password": "guess", "csrf_token": token},
        )
        statuses.append(response.status_code)
    assert statuses[-1] == 429 and int(response.headers["Retry-After"]) > 0
    session.expire_all()
    assert session.get(Account, account.id).totp_enabled_at is None  # type: ignore[union-attr]


def test_the_owner_turns_two_factor_on_with_the_password(
    client: TestClient, session: Session
) -> None:
    account = make_account(session, "with-password")
    session.commit()
    login(client, account.username)
    secret, token = _set_up(client)
    done = client.post(
        "/my/two-factor/confirm",
        data={"code": _code(secret), "current_password": PASSWORD, "csrf_token": token},
    )
    assert done.status_code == 200 and "Two-factor sign-in is on" in done.text
    session.expire_all()
    assert session.get(Account, account.id).totp_enabled_at is not None  # type: ignore[union-attr]
