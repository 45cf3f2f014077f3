"""Turning two-factor sign-in on ends the sessions the password alone made: someone logged
in elsewhere with a stolen password is logged out, and the browser that turned it on stays
logged in."""

from __future__ import annotations

import re

import pyotp
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account, WebSession
from store.db import utcnow
from tests.factories import make_account
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
        data={"code": _code(secret.group(1)), "csrf_token": csrf_of(page.text)},
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
