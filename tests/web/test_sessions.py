"""Sessions kept on the server: log-out, password change and disabling end them, so does
the absolute lifetime and the idle timeout; the sessions page lists and ends them; reading
who is logged in never writes but every few minutes, after the response."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts import sessions
from store.accounts.models import Account, WebSession
from store.db import utcnow
from tests.factories import PASSWORD, make_account
from tests.web.helpers import HTML, csrf_of, login, submit


@pytest.fixture
def other(app: FastAPI) -> Iterator[TestClient]:
    """A second browser."""
    with TestClient(app, base_url="http://store.test", headers=HTML) as c:
        yield c


def _logged_in(client: TestClient) -> bool:
    r = client.get("/my/account", follow_redirects=False)
    return r.status_code == 200


def _rows(session: Session, account: Account) -> list[WebSession]:
    session.expire_all()
    return list(
        session.scalars(
            select(WebSession)
            .where(WebSession.account_id == account.id)
            .order_by(WebSession.created_at)
        )
    )


def test_log_out_ends_the_session_for_a_copied_cookie(
    browser: TestClient, other: TestClient, session: Session
) -> None:
    alice = make_account(session, "alice")
    login(browser, "alice")
    copied = dict(browser.cookies)
    other.cookies.update(copied)
    assert _logged_in(other)  # the same cookie elsewhere is the same session
    token = csrf_of(browser.get("/my/account").text)
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 200
    assert not _logged_in(other)
    [row] = _rows(session, alice)
    assert row.ended_at is not None and row.end_reason == "logout"


def test_password_change_ends_the_other_sessions_and_keeps_this_one(
    browser: TestClient, other: TestClient, session: Session
) -> None:
    make_account(session, "bob")
    login(browser, "bob")
    login(other, "bob")
    r = submit(
        browser,
        "/my/account",
        "/my/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "a new long password",
            "new_password_confirm": "a new long password",
        },
    )
    assert r.status_code == 200 and "Other sessions are logged out" in r.text
    assert _logged_in(browser)
    assert not _logged_in(other)


def test_disabling_and_password_reset_end_every_session(
    browser: TestClient, other: TestClient, session: Session
) -> None:
    carol = make_account(session, "carol")
    login(browser, "carol")
    login(other, "carol")
    accounts.set_password(session, account=carol, password="reset by an admin!")
    session.commit()
    assert not _logged_in(browser) and not _logged_in(other)
    assert {r.end_reason for r in _rows(session, carol)} == {"password"}

    login(browser, "carol", "reset by an admin!")
    admin = make_account(session, "opsadmin", is_admin=True)
    accounts.set_active(session, account=carol, active=False, actor=admin)
    session.commit()
    assert not _logged_in(browser)
    assert _rows(session, carol)[-1].end_reason == "disabled"


def test_end_all_sessions_is_a_service(session: Session) -> None:
    dave = make_account(session, "dave")
    life = sessions.Lifetimes()
    kept, _ = sessions.start_session(
        session, account=dave, user_agent="a", address="10.0.0.1", lifetimes=life
    )
    for _ in range(2):
        sessions.start_session(
            session, account=dave, user_agent="b", address="10.0.0.2", lifetimes=life
        )
    assert sessions.end_all_sessions(session, dave, reason="reset", keep=kept.id) == 2
    assert [s.id for s in sessions.active_sessions(session, dave, lifetimes=life)] == [kept.id]
    assert sessions.end_all_sessions(session, dave, reason="reset") == 1
    assert sessions.active_sessions(session, dave, lifetimes=life) == []


def test_absolute_lifetime_and_idle_timeout(browser: TestClient, session: Session) -> None:
    erin = make_account(session, "erin")
    login(browser, "erin")
    [row] = _rows(session, erin)
    # Idle for longer than the timeout (2 days by default).
    session.execute(
        update(WebSession)
        .where(WebSession.id == row.id)
        .values(last_seen_at=utcnow() - timedelta(days=2, minutes=1))
    )
    session.commit()
    assert not _logged_in(browser)

    login(browser, "erin")
    row = _rows(session, erin)[-1]
    # Used all along, but begun longer ago than the absolute lifetime (14 days).
    session.execute(
        update(WebSession)
        .where(WebSession.id == row.id)
        .values(created_at=utcnow() - timedelta(days=15), expires_at=utcnow() - timedelta(days=1))
    )
    session.commit()
    assert not _logged_in(browser)


def test_the_lifetimes_are_settings(app: FastAPI, browser: TestClient, session: Session) -> None:
    frank = make_account(session, "frank")
    app.state.settings.session_idle_timeout = 600
    login(browser, "frank")
    [row] = _rows(session, frank)
    assert row.expires_at - row.created_at == timedelta(days=14)
    session.execute(
        update(WebSession)
        .where(WebSession.id == row.id)
        .values(last_seen_at=utcnow() - timedelta(minutes=11))
    )
    session.commit()
    assert not _logged_in(browser)


def test_last_seen_is_written_every_few_minutes_after_the_response(
    browser: TestClient, session: Session
) -> None:
    grace = make_account(session, "grace")
    login(browser, "grace")
    [row] = _rows(session, grace)
    first = row.last_seen_at
    for _ in range(3):
        assert _logged_in(browser)
    assert _rows(session, grace)[0].last_seen_at == first  # no write on every page view
    earlier = utcnow() - sessions.TOUCH_EVERY - timedelta(seconds=5)
    session.execute(update(WebSession).where(WebSession.id == row.id).values(last_seen_at=earlier))
    session.commit()
    assert _logged_in(browser)  # a GET: read-only, the touch comes after it
    assert _rows(session, grace)[0].last_seen_at > earlier + timedelta(seconds=4)


def test_the_sessions_page_lists_and_ends_sessions(
    app: FastAPI, browser: TestClient, other: TestClient, session: Session
) -> None:
    henry = make_account(session, "henry")
    other.headers["User-Agent"] = "OtherBrowser/1.0"
    login(browser, "henry")
    login(other, "henry")
    page = browser.get("/my/sessions")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "OtherBrowser/1.0" in page.text and "This browser" in page.text
    assert "testclient" in page.text  # the address
    rows = _rows(session, henry)
    theirs = next(r for r in rows if r.user_agent == "OtherBrowser/1.0")
    r = browser.post(f"/my/sessions/{theirs.id}/end", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 200 and "The session is ended" in r.text
    assert not _logged_in(other) and _logged_in(browser)

    # Someone else's session cannot be ended from here.
    ivy = make_account(session, "ivy")
    foreign, _ = sessions.start_session(
        session, account=ivy, user_agent="x", address="y", lifetimes=sessions.Lifetimes()
    )
    session.commit()
    token = csrf_of(browser.get("/my/sessions").text)
    r = browser.post(f"/my/sessions/{foreign.id}/end", data={"csrf_token": token})
    assert r.status_code == 404
    assert _rows(session, ivy)[0].ended_at is None


def test_end_every_other_session(browser: TestClient, other: TestClient, session: Session) -> None:
    make_account(session, "jack")
    login(browser, "jack")
    login(other, "jack")
    r = submit(browser, "/my/sessions", "/my/sessions/end-others")
    assert r.status_code == 200 and "1 other session ended" in r.text
    assert _logged_in(browser) and not _logged_in(other)


def test_sessions_ended_a_while_ago_are_deleted_at_the_next_log_in(session: Session) -> None:
    lee = make_account(session, "lee")
    life = sessions.Lifetimes()
    old, _ = sessions.start_session(session, account=lee, user_agent="", address="", lifetimes=life)
    recent, _ = sessions.start_session(
        session, account=lee, user_agent="", address="", lifetimes=life
    )
    sessions.end_all_sessions(session, lee, reason="logout")
    session.execute(
        update(WebSession)
        .where(WebSession.id == old.id)
        .values(ended_at=utcnow() - sessions.KEEP_ENDED - timedelta(minutes=1))
    )
    old_id, recent_id = old.id, recent.id
    sessions.start_session(session, account=lee, user_agent="", address="", lifetimes=life)
    ids = {r.id for r in _rows(session, lee)}
    assert old_id not in ids and recent_id in ids and len(ids) == 2


def test_the_api_lists_and_ends_web_sessions(
    app: FastAPI, browser: TestClient, other: TestClient, session: Session
) -> None:
    """/api/v1/me/sessions: the same sessions as the page; DELETE one logs that browser out,
    DELETE all logs out everywhere; another account's session is a 404, even for an
    administrator, and API tokens are not sessions."""
    from tests.factories import api_token, auth

    kate = make_account(session, "kate")
    other.headers["User-Agent"] = "OtherBrowser/2.0"
    login(browser, "kate")
    login(other, "kate")
    token = auth(api_token(session, kate))
    session.commit()
    api = TestClient(app, base_url="http://store.test")
    r = api.get("/api/v1/me/sessions", headers=token)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert {s["user_agent"] for s in listed} == {"testclient", "OtherBrowser/2.0"}
    assert all(s["ended_at"] is None and s["address"] for s in listed)
    assert "secret_hash" not in listed[0]
    assert api.get("/api/v1/me/sessions").status_code == 401

    theirs = next(s for s in listed if s["user_agent"] == "OtherBrowser/2.0")
    r = api.delete(f"/api/v1/me/sessions/{theirs['id']}", headers=token)
    assert r.status_code == 200, r.text
    assert r.json()["ended_at"] and r.json()["end_reason"] == "ended"
    assert not _logged_in(other) and _logged_in(browser)
    assert [s["user_agent"] for s in api.get("/api/v1/me/sessions", headers=token).json()] == [
        "testclient"
    ]
    # Again: nothing changes.
    again = api.delete(f"/api/v1/me/sessions/{theirs['id']}", headers=token)
    assert again.status_code == 200 and again.json()["ended_at"] == r.json()["ended_at"]

    lena = make_account(session, "lena")
    foreign, _ = sessions.start_session(
        session, account=lena, user_agent="x", address="y", lifetimes=sessions.Lifetimes()
    )
    session.commit()
    admin = auth(api_token(session, make_account(session, "opsadmin", is_admin=True)))
    session.commit()
    for caller in (token, admin):
        r = api.delete(f"/api/v1/me/sessions/{foreign.id}", headers=caller)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert api.delete("/api/v1/me/sessions/not-an-id", headers=token).status_code == 422
    assert _rows(session, lena)[0].ended_at is None

    r = api.delete("/api/v1/me/sessions", headers=token)
    assert r.status_code == 200 and r.json() == {"ended": 1}
    assert not _logged_in(browser)
    assert api.get("/api/v1/me/sessions", headers=token).json() == []
    assert api.get("/api/v1/me", headers=token).status_code == 200  # the token still works
