"""Sign-up, login, logout, sessions, CSRF and safe redirects."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.web.pages import SESSION_COOKIE
from store.web.routing import safe_next
from tests.factories import PASSWORD, make_account
from tests.web.helpers import csrf_of, is_html, login, submit


def test_signup_login_logout(browser: TestClient, session: Session) -> None:
    signup = submit(
        browser,
        "/signup",
        "/signup",
        {
            "username": "Alice",
            "email": "alice@example.com",
            "display_name": "Alice A.",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "accept_terms": "on",
        },
    )
    assert signup.status_code == 200
    assert str(signup.url).endswith("/my/content")
    assert "Welcome to the store, Alice A." in signup.text
    assert "alice" in signup.text  # the account menu

    out = submit(browser, "/my/content", "/logout")
    assert str(out.url).endswith("/")
    assert "You are logged out." in out.text
    assert browser.get("/my/content", follow_redirects=False).status_code == 303

    by_email = submit(
        browser, "/login", "/login", {"login": "ALICE@example.com", "password": PASSWORD}
    )
    assert "Logged in as alice" in by_email.text
    assert browser.get("/my/content").url.path == "/my/content"


def test_signup_errors_keep_input(browser: TestClient, session: Session) -> None:
    make_account(session, "taken")
    response = submit(
        browser,
        "/signup",
        "/signup",
        {
            "username": "taken",
            "email": "new@example.com",
            "display_name": "Newcomer",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "accept_terms": "on",
        },
    )
    assert response.status_code == 409
    assert is_html(response)
    assert "The username &#39;taken&#39; is taken" in response.text
    assert 'value="new@example.com"' in response.text
    assert 'value="Newcomer"' in response.text
    assert PASSWORD not in response.text  # passwords are never echoed back
    assert 'aria-invalid="true"' in response.text  # the message sits by the username field

    mismatch = submit(
        browser,
        "/signup",
        "/signup",
        {
            "username": "bob",
            "email": "b@example.com",
            "password": PASSWORD,
            "password_confirm": "x",
        },
    )
    assert mismatch.status_code == 422
    assert "The two passwords do not match" in mismatch.text
    assert 'id="signup-password_confirm-error"' in mismatch.text


def test_bad_login_rerenders_form(browser: TestClient, session: Session) -> None:
    make_account(session, "carol")
    response = submit(browser, "/login", "/login", {"login": "carol", "password": "wrong password"})
    assert response.status_code == 400
    assert "Incorrect username or password" in response.text
    assert 'value="carol"' in response.text


def test_login_required_redirects_with_next(browser: TestClient, session: Session) -> None:
    make_account(session, "dave")
    response = browser.get("/my/tokens?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fmy%2Ftokens%3Fx%3D1"

    page = browser.get(response.headers["location"])
    assert 'name="next" value="/my/tokens?x=1"' in page.text
    done = browser.post(
        "/login",
        data={
            "login": "dave",
            "password": PASSWORD,
            "next": "/my/tokens?x=1",
            "csrf_token": csrf_of(page.text),
        },
    )
    assert done.url.path == "/my/tokens"


def test_json_clients_get_json_401(client: TestClient) -> None:
    response = client.get("/my/content", headers={"accept": "application/json"})
    assert response.status_code == 401
    assert response.json()["error"] == "login_required"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/ //evil.example",
        "/\t/evil.example",
    ],
)
def test_next_open_redirect_rejected(browser: TestClient, session: Session, target: str) -> None:
    make_account(session, "erin")
    page = browser.get("/login", params={"next": target})
    assert "evil" not in page.text
    response = browser.post(
        "/login",
        data={
            "login": "erin",
            "password": PASSWORD,
            "next": target,
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_safe_next_rules() -> None:
    assert safe_next("/products/acme/db?tab=1") == "/products/acme/db?tab=1"
    assert safe_next("//evil.example") == "/"
    assert safe_next("/\\evil.example") == "/"
    assert safe_next("https://evil.example") == "/"
    assert safe_next("/a\nb") == "/"
    assert safe_next("") == "/"
    assert safe_next(None, "/x") == "/x"


def test_csrf_missing_or_wrong_token_is_403(browser: TestClient, session: Session) -> None:
    make_account(session, "frank")
    page = browser.get("/login")
    token = csrf_of(page.text)

    missing = browser.post("/login", data={"login": "frank", "password": PASSWORD})
    assert missing.status_code == 403
    assert is_html(missing)
    assert "This form expired or was sent from another site" in missing.text

    wrong = browser.post(
        "/login", data={"login": "frank", "password": PASSWORD, "csrf_token": token + "x"}
    )
    assert wrong.status_code == 403

    # A token from another session (another browser) is no good either.
    browser.cookies.clear()
    browser.get("/login")
    stolen = browser.post(
        "/login", data={"login": "frank", "password": PASSWORD, "csrf_token": token}
    )
    assert stolen.status_code == 403
    assert browser.get("/my/content", follow_redirects=False).status_code == 303

    # Without any session at all.
    browser.cookies.clear()
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 403


def test_logout_needs_post_with_csrf(browser: TestClient, session: Session) -> None:
    make_account(session, "gina")
    login(browser, "gina")
    assert browser.get("/logout").status_code == 405
    assert browser.post("/logout").status_code == 403
    assert browser.get("/my/content", follow_redirects=False).status_code == 200


def test_password_change_invalidates_other_sessions(browser: TestClient, session: Session) -> None:
    make_account(session, "hank")
    login(browser, "hank")
    old_cookie = browser.cookies[SESSION_COOKIE]

    wrong = submit(
        browser,
        "/my/account",
        "/my/account/password",
        {
            "current_password": "not it",
            "new_password": "another good password",
            "new_password_confirm": "another good password",
        },
    )
    assert wrong.status_code == 422
    assert "The current password is not correct" in wrong.text

    changed = submit(
        browser,
        "/my/account",
        "/my/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "another good password",
            "new_password_confirm": "another good password",
        },
    )
    assert changed.status_code == 200
    assert "Your password is changed" in changed.text
    # This browser stays logged in...
    assert browser.get("/my/content", follow_redirects=False).status_code == 200

    # ...while a session made before the change is logged out.
    browser.cookies.clear()
    browser.cookies.set(SESSION_COOKIE, old_cookie)
    stale = browser.get("/my/content", follow_redirects=False)
    assert stale.status_code == 303
    assert stale.headers["location"].startswith("/login")

    browser.cookies.clear()
    login(browser, "hank", "another good password")


def test_disabled_account_is_logged_out(browser: TestClient, session: Session) -> None:
    account = make_account(session, "ivan")
    login(browser, "ivan")
    account.is_active = False
    session.flush()
    assert browser.get("/my/content", follow_redirects=False).status_code == 303


def test_session_cookie_flags(browser: TestClient, session: Session) -> None:
    make_account(session, "judy")
    response = login(browser, "judy")
    cookie = next(
        h for h in response.history[0].headers.get_list("set-cookie") if SESSION_COOKIE in h
    )
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
