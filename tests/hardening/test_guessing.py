"""Guessing costs what the limits allow: attempts reserved before a password is checked,
at most N checks at once per process, unknown accounts checked once against a constant
hash. (Concurrency through store serve: test_guessing_concurrency.py.)"""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import ratelimit, security
from store.ratelimit import Limits, RateLimit, Refused, Rule
from tests.factories import PASSWORD, make_account

RULE = Rule("test", 3, 60)
OTHER = Rule("other", 5, 60)


def _hits(session: Session, rule: Rule, subject: str) -> int:
    rows = session.scalars(
        select(RateLimit.hits).where(RateLimit.key == ratelimit.key(rule, subject))
    )
    return sum(rows)


# --- reservations -------------------------------------------------------------------------


def test_reservations_stop_at_the_limit_and_come_back_on_release(session: Session) -> None:
    now = 999_980.0
    taken = [ratelimit.reserve(session, [(RULE, "a")], now=now) for _ in range(3)]
    with pytest.raises(Refused) as refused:
        ratelimit.reserve(session, [(RULE, "a")], now=now + 1)
    assert refused.value.wait == 39 and refused.value.key == ratelimit.key(RULE, "a")
    assert _hits(session, RULE, "a") == 3  # a refusal takes nothing
    ratelimit.release(session, taken[0])
    assert _hits(session, RULE, "a") == 2
    ratelimit.reserve(session, [(RULE, "a")], now=now + 2)
    # A new window starts from zero.
    ratelimit.reserve(session, [(RULE, "a")], now=now + 40)


def test_a_refused_key_takes_back_the_others(session: Session) -> None:
    now = 1_000_000.0
    for _ in range(3):
        ratelimit.reserve(session, [(RULE, "full")], now=now)
    with pytest.raises(Refused):
        ratelimit.reserve(session, [(OTHER, "ip"), (RULE, "full")], now=now)
    assert _hits(session, OTHER, "ip") == 0
    # Empty subjects are not counted.
    reservation = ratelimit.reserve(session, [(OTHER, "ip"), (RULE, None)], now=now)
    assert [k for k, _ in reservation.keys] == [ratelimit.key(OTHER, "ip")]


def test_a_release_never_goes_below_zero(session: Session) -> None:
    reservation = ratelimit.reserve(session, [(RULE, "z")], now=2_000_000.0)
    ratelimit.release(session, reservation)
    ratelimit.release(session, reservation)
    assert _hits(session, RULE, "z") == 0


# --- check slots ----------------------------------------------------------------------------


def test_slots_cap_concurrent_checks_and_refuse_after_the_wait() -> None:
    slots = security.CheckSlots(2, wait_s=0.3)
    running, peak = 0, 0
    lock = threading.Lock()
    gate = threading.Event()

    def check() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(5)
        with lock:
            running -= 1
        return "ok"

    results: list[str] = []

    def caller() -> None:
        try:
            results.append(slots.run(check))
        except security.ChecksBusy as exc:
            assert exc.status_code == 429 and exc.extra["headers"]["Retry-After"] == "1"
            results.append("busy")

    threads = [threading.Thread(target=caller) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.6)  # the three without a slot give up after 0.3 s
    gate.set()
    for t in threads:
        t.join(5)
    assert sorted(results) == ["busy", "busy", "busy", "ok", "ok"]
    assert peak == 2 and slots.busy == 0


def test_a_waiter_gets_the_slot_handed_over_first_come_first_served() -> None:
    slots = security.CheckSlots(1, wait_s=5)
    order: list[int] = []

    async def main() -> None:
        release = asyncio.Event()

        async def first() -> None:
            await slots.run_async(time.sleep, 0.2)
            order.append(0)

        async def later(i: int) -> None:
            await asyncio.sleep(0.01 * i)
            await slots.run_async(order.append, i)

        await asyncio.gather(first(), later(1), later(2), later(3))
        release.set()

    asyncio.run(main())
    assert order == [0, 1, 2, 3] and slots.busy == 0


def test_async_waiters_are_refused_after_the_wait_holding_no_slot() -> None:
    slots = security.CheckSlots(1, wait_s=0.2)

    async def main() -> list[str]:
        async def one() -> str:
            try:
                await slots.run_async(time.sleep, 0.5)
            except security.ChecksBusy:
                return "busy"
            return "ok"

        return list(await asyncio.gather(*(one() for _ in range(4))))

    assert sorted(asyncio.run(main())) == ["busy", "busy", "busy", "ok"]
    assert slots.busy == 0


def test_a_held_slot_is_given_back_unused_or_freed_by_its_check() -> None:
    slots = security.CheckSlots(1, wait_s=0.1)

    async def main() -> None:
        async with slots.hold_async():
            assert slots.busy == 1
            with pytest.raises(security.ChecksBusy):  # refused before its body runs
                async with slots.hold_async():
                    raise AssertionError("no slot was free")
        assert slots.busy == 0  # unused: given back on exit
        gate = threading.Event()
        async with slots.hold_async() as slot:
            future = slot.submit(gate.wait, 5)
            with pytest.raises(RuntimeError):  # one check per slot
                slot.submit(gate.wait, 5)
        assert slots.busy == 1  # its check still runs in it
        gate.set()
        await asyncio.wrap_future(future)
        assert slots.busy == 0

    asyncio.run(main())


def test_a_check_already_running_is_joined_without_a_second_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from store.registry import credentials

    calls: list[str] = []

    def slow(password_hash: str, password: str) -> bool:
        calls.append(password)
        time.sleep(0.2)
        return True

    monkeypatch.setattr(security, "check_password", slow)
    cache = credentials.PasswordCache()
    slots = security.password_checks

    async def main() -> list[bool]:
        async with slots.hold_async() as slot:
            first = asyncio.ensure_future(cache.check("bob", "pw", "h", slot))
            await asyncio.sleep(0.05)
        assert cache.pending("bob", "pw", "h")
        async with slots.hold_async() as other:
            joined = await cache.check("bob", "pw", "h", other)
        return [await first, joined]

    assert asyncio.run(main()) == [True, True]
    assert calls == ["pw"] and slots.busy == 0


# --- log-in and /token ----------------------------------------------------------------------


def _small(app: FastAPI) -> Limits:
    limits = Limits(
        login_account=Rule("login-acct", 3, 900),
        login_ip=Rule("login-ip", 5, 900),
        token_account=Rule("token-acct", 3, 300),
        token_ip=Rule("token-ip", 5, 300),
    )
    app.state.rate_limits = limits
    return limits


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_api_log_in_counts_failures_only(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    limits = _small(app)
    make_account(session, "carol")
    body = {"login": "carol", "password": PASSWORD, "token_name": "t"}
    assert client.post("/api/v1/auth/token", json=body).status_code == 201
    assert _hits(session, limits.login_account, "carol") == 0  # a success gives it back
    for _ in range(3):
        r = client.post("/api/v1/auth/token", json={**body, "password": "nope"})
        assert r.status_code == 401
    assert _hits(session, limits.login_account, "carol") == 3
    r = client.post("/api/v1/auth/token", json=body)  # right, but no attempt left
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_unknown_accounts_cost_one_check_against_a_constant_hash(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small(app)
    hashes: list[str] = []
    threads: set[str] = set()
    real = security.check_password

    def counting(password_hash: str, password: str) -> bool:
        hashes.append(password_hash)
        threads.add(threading.current_thread().name.rpartition("_")[0])
        return real(password_hash, password)

    monkeypatch.setattr(security, "check_password", counting)
    for user in ("ghost1", "ghost2"):
        r = client.get("/token?service=store-registry", headers=_basic(user, "whatever"))
        assert r.status_code == 401
    r = client.post(
        "/api/v1/auth/token", json={"login": "ghost3", "password": "x", "token_name": "t"}
    )
    assert r.status_code == 401
    assert len(hashes) == 3 and len(set(hashes)) == 1
    # In a check slot's thread (no other thread taken for the constant hash).
    assert threads == {"password-check"}


def test_token_password_attempts_are_reserved_and_given_back(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    limits = _small(app)
    make_account(session, "dave")
    url = "/token?service=store-registry"
    assert client.get(url, headers=_basic("dave", PASSWORD)).status_code == 200
    assert _hits(session, limits.token_account, "dave") == 0
    for i in range(3):
        assert client.get(url, headers=_basic("dave", f"bad{i}")).status_code == 401
    assert _hits(session, limits.token_account, "dave") == 3
    assert _hits(session, limits.token_ip, "testclient") == 3
    r = client.get(url, headers=_basic("dave", "bad-again"))
    assert r.status_code == 429 and r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"


def test_busy_check_slots_answer_429_and_give_the_attempt_back(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    limits = _small(app)
    make_account(session, "erin")
    security.password_checks.configure(1, wait_s=0.05)
    hold = threading.Event()
    holder = threading.Thread(target=security.password_checks.run, args=(hold.wait, 5))
    holder.start()
    try:
        time.sleep(0.05)
        r = client.get("/token?service=store-registry", headers=_basic("erin", "guess"))
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        r = client.post(
            "/api/v1/auth/token", json={"login": "erin", "password": "guess", "token_name": "t"}
        )
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    finally:
        hold.set()
        holder.join(5)
        security.password_checks.configure(None)
    assert _hits(session, limits.token_account, "erin") == 0
    assert _hits(session, limits.login_account, "erin") == 0


def test_busy_check_slots_refuse_unknown_users_before_anything_is_written(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    _small(app)
    security.password_checks.configure(1, wait_s=0.05)
    hold = threading.Event()
    holder = threading.Thread(target=security.password_checks.run, args=(hold.wait, 5))
    holder.start()
    try:
        time.sleep(0.05)
        for user in ("ghost1", "ghost2"):
            r = client.get("/token?service=store-registry", headers=_basic(user, "guess"))
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        r = client.post(
            "/api/v1/auth/token", json={"login": "ghost3", "password": "x", "token_name": "t"}
        )
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    finally:
        hold.set()
        holder.join(5)
        security.password_checks.configure(None)
    assert session.scalars(select(RateLimit)).all() == []  # no attempt taken, none given back
