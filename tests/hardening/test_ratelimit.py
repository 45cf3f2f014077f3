"""Rate limits: the counters, log-in and sign-up (pages and API), and /token failures."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store import ratelimit
from store.accounts import service as accounts
from store.ratelimit import BlockedKeys, Limits, RateLimit, Rule
from store.registry.credentials import unguessable_username
from tests.factories import PASSWORD, make_account
from tests.web.helpers import HTML, csrf_of

RULE = Rule("test", 3, 60)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def small_limits(app: FastAPI, **rules: Rule) -> Limits:
    limits = Limits(
        login_account=Rule("login-acct", 3, 900),
        login_ip=Rule("login-ip", 5, 900),
        signup_ip=Rule("signup-ip", 2, 3600),
        token_account=Rule("token-acct", 3, 300),
        token_ip=Rule("token-ip", 5, 300),
    )
    for name, rule in rules.items():
        limits = limits.__class__(**{**limits.__dict__, name: rule})
    app.state.rate_limits = limits
    return limits


# --- counters ------------------------------------------------------------------------------


def test_hit_counts_in_one_window_and_reports_the_wait(session: Session) -> None:
    now = 999_980.0  # 20 s into a 60 s window (999_960 is a multiple of 60)
    assert ratelimit.hit(session, RULE, "a", now=now) is None
    assert ratelimit.hit(session, RULE, "a", now=now + 1) is None
    assert ratelimit.check(session, [(RULE, "a")], now=now + 2) is None
    assert ratelimit.hit(session, RULE, "a", now=now + 2) == 38  # the third reaches the limit
    assert ratelimit.check(session, [(RULE, "a")], now=now + 3) == 37
    assert ratelimit.check(session, [(RULE, "b")], now=now + 3) is None
    # The next window starts from zero.
    assert ratelimit.check(session, [(RULE, "a")], now=now + 40) is None


def test_subjects_are_hashed_and_case_folded(session: Session) -> None:
    ratelimit.hit(session, RULE, "Alice@Example.com", now=1000.0)
    keys = session.scalars(select(RateLimit.key)).all()
    assert keys == [ratelimit.key(RULE, "alice@example.com")]
    assert "alice" not in keys[0]


def test_ended_windows_are_pruned_when_a_new_one_starts(session: Session) -> None:
    for i in range(5):
        ratelimit.hit(session, RULE, f"s{i}", now=1000.0)
    ratelimit.hit(session, RULE, "fresh", now=5000.0)
    assert session.scalar(select(func.count()).select_from(RateLimit)) == 1


def test_blocked_keys_refresh_from_the_table(session: Session) -> None:
    for _ in range(3):
        ratelimit.hit(session, RULE, "x")
    blocked = BlockedKeys()
    assert blocked.wait([ratelimit.key(RULE, "x")]) is None
    blocked.refresh(session, [RULE])
    assert 1 <= (blocked.wait([ratelimit.key(RULE, "x")]) or 0) <= 60
    assert blocked.wait([ratelimit.key(RULE, "y")]) is None
    assert not blocked.due()


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "expected"),
    [
        ("203.0.113.7", "198.51.100.1", (), "203.0.113.7"),  # no trusted proxy: ignored
        ("10.0.0.2", "198.51.100.1", ("10.0.0.0/8",), "198.51.100.1"),
        ("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.9", ("10.0.0.0/8",), "198.51.100.1"),
        ("203.0.113.7", "198.51.100.1", ("10.0.0.0/8",), "203.0.113.7"),  # peer not trusted
        ("2001:db8:1:2:3:4:5:6", "", (), "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "", (), "192.0.2.1"),
        ("testclient", "", (), "testclient"),
    ],
)
def test_client_ip(peer: str, forwarded: str, proxies: tuple[str, ...], expected: str) -> None:
    request = SimpleNamespace(
        client=SimpleNamespace(host=peer), headers={"x-forwarded-for": forwarded}
    )
    assert ratelimit.client_ip(request, Limits(trusted_proxies=proxies)) == expected


def test_trusted_proxies_setting(app: FastAPI) -> None:
    app.state.settings.trusted_proxies = "10.0.0.0/8, 192.168.1.1"
    app.state.rate_limits = None
    assert ratelimit.limits_of(app).trusted("10.1.2.3")
    assert ratelimit.limits_of(app).trusted("192.168.1.1")
    assert not ratelimit.limits_of(app).trusted("192.168.1.2")


# --- log-in and sign-up -----------------------------------------------------------------------


def _login_form(client: TestClient, login: str, password: str):  # type: ignore[no-untyped-def]
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"login": login, "password": password, "csrf_token": token})


def test_login_page_limits_failures_per_account(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    small_limits(app)
    make_account(session, "mallory-target")
    client.headers.update(HTML)
    for _ in range(3):
        assert _login_form(client, "mallory-target", "wrong").status_code == 400
    blocked = _login_form(client, "mallory-target", PASSWORD)  # even the right password waits
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 900
    assert "Too many failed log-ins" in blocked.text
    # Another account from the same address is still allowed (the address limit is 5).
    make_account(session, "someone-else")
    assert _login_form(client, "someone-else", PASSWORD).status_code == 200


def test_login_page_limits_failures_per_address(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    small_limits(app)
    client.headers.update(HTML)
    for i in range(5):
        assert _login_form(client, f"nobody{i}", "wrong").status_code == 400
    make_account(session, "innocent")
    assert _login_form(client, "innocent", PASSWORD).status_code == 429


def test_api_login_limits_failures(app: FastAPI, client: TestClient, session: Session) -> None:
    small_limits(app)
    make_account(session, "apiuser")
    for _ in range(3):
        response = client.post("/api/v1/auth/token", json={"login": "apiuser", "password": "x"})
        assert response.status_code == 401
    response = client.post("/api/v1/auth/token", json={"login": "apiuser", "password": PASSWORD})
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["retry-after"]) > 0


def test_successful_logins_are_not_counted(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    small_limits(app)
    make_account(session, "regular")
    for _ in range(6):
        response = client.post(
            "/api/v1/auth/token", json={"login": "regular", "password": PASSWORD}
        )
        assert response.status_code == 201


def test_signups_are_limited_per_address(app: FastAPI, client: TestClient) -> None:
    small_limits(app)
    body = {"username": "new1", "email": "new1@example.com", "password": "a long password 1"}
    assert client.post("/api/v1/accounts", json=body).status_code == 201
    assert client.post("/api/v1/accounts", json=body).status_code == 409  # counted too
    third = {**body, "username": "new3", "email": "new3@example.com"}
    response = client.post("/api/v1/accounts", json=third)
    assert response.status_code == 429
    assert "retry-after" in response.headers
    client.headers.update(HTML)
    token = csrf_of(client.get("/signup").text)
    page = client.post(
        "/signup",
        data={
            "username": "new4",
            "email": "new4@example.com",
            "password": "a long password 1",
            "password_confirm": "a long password 1",
            "accept_terms": "on",
            "csrf_token": token,
        },
    )
    assert page.status_code == 429
    assert "Too many sign-ups" in page.text


def test_limits_can_be_disabled(app: FastAPI, client: TestClient) -> None:
    app.state.rate_limits = Limits(enabled=False, login_ip=Rule("login-ip", 1, 60))
    for _ in range(3):
        response = client.post("/api/v1/auth/token", json={"login": "ghost", "password": "x"})
        assert response.status_code == 401


# --- /token ------------------------------------------------------------------------------------


def test_token_failures_answer_429_in_the_registry_shape(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    small_limits(app)
    make_account(session, "dockeruser")
    session.commit()
    for _ in range(3):
        assert client.get("/token", headers=basic("dockeruser", "nope")).status_code == 401
    response = client.get("/token", headers=basic("dockeruser", PASSWORD))
    assert response.status_code == 429
    assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert "try again" in response.json()["errors"][0]["message"]
    assert int(response.headers["retry-after"]) > 0
    # Anonymous requests (no credentials to guess with) are not limited.
    assert client.get("/token").status_code == 200


def test_token_account_limit_spares_access_tokens(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    """Bad passwords sent in someone's name must not lock their CI's tokens out."""
    small_limits(app)
    victim = make_account(session, "victim")
    pat = accounts.create_token(
        session, kind="personal", name="ci", scopes=["pull"], created_by=victim
    ).secret
    session.commit()
    for _ in range(3):
        assert client.get("/token", headers=basic("victim", "guess")).status_code == 401
    assert client.get("/token", headers=basic("victim", PASSWORD)).status_code == 429
    assert client.get("/token", headers=basic("victim", pat)).status_code == 200


def test_token_address_limit_covers_every_credential(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    small_limits(app)
    for i in range(5):
        bad = f"stp_{'x' * 30}{i}"
        assert client.get("/token", headers=basic("", bad)).status_code == 401
    make_account(session, "bystander")
    session.commit()
    assert client.get("/token", headers=basic("bystander", PASSWORD)).status_code == 429


def test_token_block_reaches_other_processes(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    """Another process counted the failures: this one learns it at its next refresh."""
    limits = small_limits(app)
    make_account(session, "shared")
    session.commit()
    assert client.get("/token", headers=basic("shared", PASSWORD)).status_code == 200
    for _ in range(3):  # the other process's failures, straight into the table
        ratelimit.hit(session, limits.token_account, "shared")
    session.commit()
    guard = ratelimit.token_guard(app, unguessable_username)
    assert client.get("/token", headers=basic("shared", PASSWORD)).status_code == 200
    guard.blocked._next_refresh = 0.0  # the refresh interval passed
    assert client.get("/token", headers=basic("shared", PASSWORD)).status_code == 429
