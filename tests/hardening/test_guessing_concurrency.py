"""Limits on guessing hold under concurrency: through a real `store serve --workers 2`, on
SQLite and PostgreSQL, bursts of bad credentials sent all at once are checked at most up
to the limit, the rest refused with 429 and Retry-After, and never a 5xx.

Each burst comes from an address of its own (``X-Forwarded-For`` from a trusted proxy,
``STORE_TRUSTED_PROXIES``), so the bursts do not share counters. ``/healthz`` is sampled
during the largest burst; its latency is printed (measured by bench/guessing.py, never
asserted here).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from store import migrate, ratelimit
from store.db import make_engine, make_sessionmaker, session_scope
from store.ratelimit import RateLimit
from tests.factories import PASSWORD, make_account
from tests.hardening.serving import Served, store_serve
from tests.pg import PG_URL, scratch_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMITS = ratelimit.Limits()


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'store.db'}"
        (tmp_path / "data").mkdir()
        yield from _serve(tmp_path, url)
        return
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database("guessing") as url:
        yield from _serve(tmp_path, url)


def _serve(tmp_path: Path, url: str) -> Iterator[Served]:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with session_scope(make_sessionmaker(engine)) as session:
            make_account(session, "target")
    finally:
        engine.dispose()
    with store_serve(
        tmp_path, url, workers=2, env={"STORE_TRUSTED_PROXIES": "127.0.0.1"}
    ) as served:
        served.database_url = url  # type: ignore[attr-defined]
        yield served


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


WINDOWS = sorted({r.window_s for r in vars(LIMITS).values() if isinstance(r, ratelimit.Rule)})


async def _inside_one_window(margin_s: float = 60.0) -> None:
    """Wait until every rule's window has at least ``margin_s`` left: a burst that crossed
    a window's end would be counted in two windows, and the first window's row is pruned
    when the next begins, so the counts read back would miss it."""
    while True:
        now = time.time()
        if all(margin_s <= w - now % w and now % w >= 1.0 for w in WINDOWS):
            return
        await asyncio.sleep(1.0)


async def _burst(
    served: Served, requests: list[tuple[str, str, dict[str, object]]]
) -> tuple[list[httpx.Response], list[float]]:
    """Send every request at once, all inside one window of every rule; sample /healthz
    meanwhile (seconds per answer)."""
    await _inside_one_window()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=served.base, timeout=120, limits=limits) as client:
        done = asyncio.Event()
        health: list[float] = []

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=served.base, timeout=30) as prober:
                while not done.is_set():
                    started = time.perf_counter()
                    r = await prober.get("/healthz")
                    assert r.status_code == 200
                    health.append(time.perf_counter() - started)
                    await asyncio.sleep(0.01)

        prober = asyncio.create_task(probe())
        try:
            answers = await asyncio.gather(
                *(client.request(m, p, **kw) for m, p, kw in requests)  # type: ignore[arg-type]
            )
        finally:
            done.set()
            await prober
    return list(answers), health


def _hits(served: Served, rule: ratelimit.Rule, subject: str) -> int:
    engine = make_engine(served.database_url)  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(RateLimit.hits).where(RateLimit.key == ratelimit.key(rule, subject))
            ).all()
    finally:
        engine.dispose()
    return sum(r[0] for r in rows)


def _report(what: str, answers: list[httpx.Response], health: list[float]) -> Counter[int]:
    statuses = Counter(r.status_code for r in answers)
    if len(health) >= 2:
        p99 = statistics.quantiles(health, n=100)[98] * 1000
        print(f"{what}: {dict(statuses)}; /healthz n={len(health)} p99={p99:.1f} ms")
    return statuses


def test_random_credentials_from_one_address(served: Served) -> None:
    """80 requests with random Basic credentials (unknown users: one dummy check each) from
    one address: at most the address's limit are checked, every other one is a 429."""
    address = "10.1.0.1"
    requests = [
        (
            "GET",
            "/token?service=store-registry",
            {
                "headers": {
                    **_basic(secrets.token_hex(6), secrets.token_hex(8)),
                    "X-Forwarded-For": address,
                }
            },
        )
        for _ in range(80)
    ]
    answers, health = asyncio.run(_burst(served, requests))
    statuses = _report("80 random credentials", answers, health)
    assert set(statuses) <= {401, 429}, (statuses, served.log.read_text()[-3000:])
    assert statuses[401] <= LIMITS.token_ip.limit
    assert statuses[429] >= 80 - LIMITS.token_ip.limit
    for r in answers:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    # Every check made is counted, and only those (a 429 for a busy server gave its
    # attempt back).
    assert _hits(served, LIMITS.token_ip, address) == statuses[401]


def test_wrong_passwords_for_one_account_at_token(served: Served) -> None:
    address = "10.2.0.1"
    requests = [
        (
            "GET",
            "/token?service=store-registry",
            {"headers": {**_basic("target", f"wrong-{i}"), "X-Forwarded-For": address}},
        )
        for i in range(30)
    ]
    answers, health = asyncio.run(_burst(served, requests))
    statuses = _report("30 wrong passwords at /token", answers, health)
    assert set(statuses) <= {401, 429}, statuses
    assert statuses[401] <= LIMITS.token_account.limit
    assert _hits(served, LIMITS.token_account, "target") == statuses[401]
    # The right password is refused too while the account is over its limit.
    r = httpx.get(
        f"{served.base}/token?service=store-registry",
        headers={**_basic("target", PASSWORD), "X-Forwarded-For": "10.2.0.2"},
    )
    if statuses[401] == LIMITS.token_account.limit:
        assert r.status_code == 429


def test_wrong_passwords_for_one_account_at_the_api(served: Served) -> None:
    address = "10.3.0.1"
    requests = [
        (
            "POST",
            "/api/v1/auth/token",
            {
                "json": {"login": "target", "password": f"wrong-{i}", "token_name": "x"},
                "headers": {"X-Forwarded-For": address},
            },
        )
        for i in range(16)
    ]
    answers, health = asyncio.run(_burst(served, requests))
    statuses = _report("16 wrong passwords at the API", answers, health)
    assert set(statuses) <= {401, 429}, (statuses, served.log.read_text()[-3000:])
    assert statuses[401] <= LIMITS.login_account.limit
    assert statuses[429] >= 16 - LIMITS.login_account.limit
    assert _hits(served, LIMITS.login_account, "target") == statuses[401]
    assert _hits(served, LIMITS.login_ip, address) == statuses[401]
    # A correct log-in from elsewhere is refused while the account is over its limit,
    # and is not counted as a failure.
    r = httpx.post(
        f"{served.base}/api/v1/auth/token",
        json={"login": "target", "password": PASSWORD, "token_name": "x"},
        headers={"X-Forwarded-For": "10.3.0.2"},
    )
    assert r.status_code == (429 if statuses[401] == LIMITS.login_account.limit else 201)
    assert _hits(served, LIMITS.login_ip, "10.3.0.2") == 0


def _two_factor_account(served: Served, username: str) -> None:
    """An account with two-factor sign-in on, its secret sealed with the server's key."""
    import pyotp

    from store.accounts import two_factor
    from store.config import Settings
    from store.db import utcnow

    settings = Settings(secret_key="hardening-test-secret-0123456789")
    engine = make_engine(served.database_url)  # type: ignore[attr-defined]
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            account = make_account(session, username)
            secret = two_factor.begin(session, settings=settings, account=account).secret
            totp = pyotp.TOTP(secret)
            code = totp.generate_otp(totp.timecode(utcnow()))
            two_factor.confirm(
                session, settings=settings, account=account, code=code, password=PASSWORD
            )
    finally:
        engine.dispose()


def _account_id(served: Served, username: str) -> str:
    from store.accounts.models import Account

    engine = make_engine(served.database_url)  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            return str(
                conn.execute(select(Account.id).where(Account.username == username)).one()[0]
            )
    finally:
        engine.dispose()


def test_wrong_two_factor_codes_at_once(served: Served) -> None:
    """The code step after a right password, 25 wrong codes sent at once with the same
    pending log-in: attempts are reserved before a code is checked, so at most the
    account's limit are checked (each counted), the rest are 429 with Retry-After."""
    import re

    _two_factor_account(served, "coded")
    address = "10.4.0.1"
    headers = {"X-Forwarded-For": address, "Accept": "text/html"}
    csrf = re.compile(r'name="csrf_token" value="([^"]+)"')
    with httpx.Client(base_url=served.base, timeout=60, headers=headers) as browser:
        token = csrf.search(browser.get("/login").text).group(1)  # type: ignore[union-attr]
        r = browser.post(
            "/login",
            data={"login": "coded", "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/login/two-factor", r.text
        page = browser.get("/login/two-factor")
        token = csrf.search(page.text).group(1)  # type: ignore[union-attr]
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    requests = [
        (
            "POST",
            "/login/two-factor",
            {
                "data": {"code": f"{i:06d}", "csrf_token": token},
                "headers": {**headers, "Cookie": cookie},
            },
        )
        for i in range(25)
    ]
    answers, health = asyncio.run(_burst(served, requests))
    statuses = _report("25 wrong two-factor codes", answers, health)
    assert set(statuses) <= {422, 429}, (statuses, served.log.read_text()[-3000:])
    assert statuses[422] <= LIMITS.login_account.limit
    assert statuses[429] >= 25 - LIMITS.login_account.limit
    for r in answers:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
    subject = f"2fa:{_account_id(served, 'coded')}"
    assert _hits(served, LIMITS.login_account, subject) == statuses[422]
    assert _hits(served, LIMITS.login_ip, address) == statuses[422]
