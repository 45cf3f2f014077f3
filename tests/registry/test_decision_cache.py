"""The token endpoint's per-process cache of credential rows (store.registry.lookup) against
changes made by *another process*: the decision generation (migration 0750) is bumped by
triggers, so a change committed anywhere is seen at the very next request.

The server is the app in this process on its own engine, as in production (raw sqlite3 or
psycopg's async pool, committed data in a database of its own); the changes are made by a
spawned process through the store's own services, or by raw SQL.
"""

from __future__ import annotations

import base64
import multiprocessing
import random
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from store import migrate
from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account, Organization
from store.app import create_app
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.licensing import entitlements
from store.licensing.models import Entitlement
from store.registry import lookup, tokens, visibility
from store.registry.routes import registry_state
from tests import pg
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier, tier_of

APP = "repository:acme/app:pull"
TOOLS = "repository:alice/tools:pull"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def world(backend: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path / 'cache.db'}" if backend == "sqlite" else pg.create_database("dc")
    try:
        yield from _world(url, tmp_path)
    finally:
        if backend != "sqlite":
            pg.drop_database(url)


def _world(url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    secrets: dict[str, str] = {}
    with session_scope(factory) as session:
        root = make_admin(session)
        alice = make_account(session, "alice")
        acme = make_org(session, alice, "acme")
        product = make_product(session, acme, alice, "app", tiers=[paid_tier()])
        for name in ("bob", "carol", "dave", "erin", "frank", "gina"):
            person = make_account(session, name)
            secrets[name] = accounts.create_token(
                session, kind="personal", name="cli", scopes=["pull"], created_by=person
            ).secret
            if name in ("bob", "erin", "frank", "gina"):
                entitlements.grant(
                    session, actor=alice, tier=tier_of(product, "pro"), account=person
                )
            if name in ("carol", "gina"):
                accounts.add_member(session, org=acme, actor=root, account=person, role="viewer")
        visibility.set_visibility(session, actor=alice, name="alice/tools", visibility="public")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        secret_key="test-secret-key-0123456789",
        public_url="http://store.test",
        environment="test",
    )
    app = create_app(settings, migrate=False)
    try:
        yield {"app": app, "url": url, "secrets": secrets}
    finally:
        app.state.engine.dispose()
        engine.dispose()


# --- the changes, made in another process --------------------------------------------------


def _change(url: str, what: str) -> None:
    """Runs in a spawned process: one change through the store's services, committed."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as session:
            alice = session.scalars(select(Account).where(Account.username == "alice")).one()
            root = session.scalars(select(Account).where(Account.username == "root-admin")).one()

            def account(name: str) -> Account:
                return session.scalars(select(Account).where(Account.username == name)).one()

            if what == "revoke-token":
                bob = account("bob")
                token = session.scalars(
                    select(AccessToken).where(AccessToken.account_id == bob.id)
                ).one()
                accounts.revoke_token(session, token=token, actor=bob)
            elif what == "refund":
                erin = account("erin")
                grant = session.scalars(
                    select(Entitlement).where(Entitlement.account_id == erin.id)
                ).one()
                entitlements.revoke(session, entitlement=grant, actor=alice, reason="refund")
            elif what == "remove-member":
                acme = session.scalars(
                    select(Organization).where(Organization.slug == "acme")
                ).one()
                accounts.remove_member(session, org=acme, actor=alice, username="carol")
            elif what == "make-private":
                visibility.set_visibility(
                    session, actor=alice, name="alice/tools", visibility="private"
                )
            elif what == "disable":
                accounts.set_active(session, account=account("frank"), active=False, actor=root)
            else:
                raise AssertionError(what)
    finally:
        engine.dispose()


def _in_another_process(target: Any, *args: Any) -> None:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join(120)
    assert process.exitcode == 0


REVOCATIONS = [
    ("revoke-token", "bob", APP, "revoked"),
    ("refund", "erin", APP, "revoked"),
    ("remove-member", "carol", APP, "no license"),
    ("make-private", "dave", TOOLS, "No access"),
    ("disable", "frank", APP, "disabled"),
]


def test_a_change_in_another_process_is_seen_at_the_next_request(
    world: dict[str, Any],
) -> None:
    app = world["app"]
    with TestClient(app, base_url="http://store.test") as client:
        db = registry_state(app).db
        assert db.name in ("sqlite", "postgresql")  # the production executors
        for what, who, scope, message in REVOCATIONS:
            headers = _basic(who, world["secrets"][who])
            query = {"service": "store-registry", "scope": scope}
            for _ in range(2):  # the second answered from the cache
                answer = client.get("/token", params=query, headers=headers)
                assert answer.status_code == 200, (what, answer.text)
                assert tokens.decode_unverified(answer.json()["token"])[1]["access"]
            key = ("token", *_token_params(world["secrets"][who]), scope.split(":")[1])
            assert db.cache.get(key, utcnow()) is not None, what
            _in_another_process(_change, world["url"], what)
            refused = client.get("/token", params=query, headers=headers)
            assert refused.status_code == 401, (what, refused.text)
            assert message in refused.json()["errors"][0]["message"], what


def _token_params(secret: str) -> tuple[Any, ...]:
    from store import security

    return (security.hash_token(secret),)


def test_a_cached_row_is_not_used_past_its_horizon(world: dict[str, Any]) -> None:
    """An entitlement that ends by time alone (no write) ends the cached row with it."""
    app = world["app"]
    engine = make_engine(world["url"])
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            bob = session.scalars(select(Account).where(Account.username == "bob")).one()
            grant = session.scalars(
                select(Entitlement).where(Entitlement.account_id == bob.id)
            ).one()
            ends = utcnow() + timedelta(seconds=3)
            grant.ends_at = ends
    finally:
        engine.dispose()
    with TestClient(app, base_url="http://store.test") as client:
        headers = _basic("bob", world["secrets"]["bob"])
        query = {"service": "store-registry", "scope": APP}
        assert client.get("/token", params=query, headers=headers).status_code == 200
        key = ("token", *_token_params(world["secrets"]["bob"]), "acme/app")
        entry = registry_state(app).db.cache._entries[key]
        assert abs((entry[2] - ends).total_seconds()) < 0.001  # the row ends with the grant
        while utcnow() < ends:
            time.sleep(0.05)
        refused = client.get("/token", params=query, headers=headers)
        assert refused.status_code == 401 and "expired" in refused.json()["errors"][0]["message"]


# --- property: the cache never answers with a grant its source no longer allows -----------

FLIPS = {
    "member": (
        "DELETE FROM memberships WHERE account_id = :gina",
        "INSERT INTO memberships (id, organization_id, account_id, role, created_at) "
        "VALUES (:mid, :acme, :gina, 'viewer', :now)",
    ),
    "entitlement": (
        "UPDATE entitlements SET status = 'revoked' WHERE account_id = :gina",
        "UPDATE entitlements SET status = 'active' WHERE account_id = :gina",
    ),
    "product": (
        "UPDATE products SET status = 'suspended' WHERE repository = 'acme/app'",
        "UPDATE products SET status = 'published' WHERE repository = 'acme/app'",
    ),
}


def _allows(on: dict[str, bool]) -> bool:
    """gina pulls acme/app as a member of acme, or as a holder while it is not suspended."""
    return on["member"] or (on["entitlement"] and on["product"])


def _flipper(url: str, seed: int, flips: int, log: Any) -> None:
    """Runs in a spawned process: turns one of the three facts of gina's access off or on
    at random, each in a transaction of its own, logging (began, committed, allowed) with
    the machine's monotonic clock; a hot write (last_used_at) in each bumps nothing."""
    import uuid as uuid_

    rng = random.Random(seed)
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            ids = {
                "gina": conn.execute(
                    text("SELECT id FROM accounts WHERE username = 'gina'")
                ).scalar_one(),
                "acme": conn.execute(
                    text("SELECT id FROM organizations WHERE slug = 'acme'")
                ).scalar_one(),
            }
        on = dict.fromkeys(FLIPS, True)
        for _ in range(flips):
            which = rng.choice(sorted(FLIPS))
            off_sql, on_sql = FLIPS[which]
            mid = uuid_.uuid4()
            began = time.monotonic()
            with engine.begin() as conn:
                params = {**ids, "now": utcnow(), "mid": mid.hex if sqlite else mid}
                conn.execute(text(on_sql if not on[which] else off_sql), params)
                conn.execute(
                    text("UPDATE access_tokens SET last_used_at = :now"), {"now": utcnow()}
                )
            on[which] = not on[which]
            log.put((began, time.monotonic(), _allows(on)))
            time.sleep(rng.uniform(0, 0.03))
    finally:
        engine.dispose()


def test_the_cache_never_grants_what_its_source_no_longer_allows(world: dict[str, Any]) -> None:
    app = world["app"]
    context = multiprocessing.get_context("spawn")
    log = context.Queue()
    headers = _basic("gina", world["secrets"]["gina"])
    query = {"service": "store-registry", "scope": APP}
    answers: list[tuple[float, float, bool]] = []
    with TestClient(app, base_url="http://store.test") as client:
        assert client.get("/token", params=query, headers=headers).status_code == 200
        flipper = context.Process(target=_flipper, args=(world["url"], 20261204, 80, log))
        flipper.start()
        try:
            deadline = time.monotonic() + 120
            while flipper.is_alive() and time.monotonic() < deadline:
                sent = time.monotonic()
                answer = client.get("/token", params=query, headers=headers)
                assert answer.status_code in (200, 401), answer.text
                answers.append((sent, time.monotonic(), answer.status_code == 200))
        finally:
            flipper.join(120)
        assert flipper.exitcode == 0
        hits = registry_state(app).db.cache
    commits: list[tuple[float, float, bool]] = []
    while len(commits) < 80:
        commits.append(log.get(timeout=10))
    assert len(hits) >= 1
    states = [(float("-inf"), float("-inf"), True), *commits]
    granted = refused = 0
    for sent, received, allowed in answers:
        # The answers a correct store may give: the state after the last commit that had
        # returned before the request was sent, or after any commit begun before its answer.
        first = max(i for i, c in enumerate(states) if c[1] <= sent)
        possible = [s[2] for i, s in enumerate(states) if i >= first and s[0] < received]
        assert allowed in possible, (sent, received, allowed, states[first : first + 3])
        granted += allowed
        refused += not allowed
    assert granted and refused  # both sides were exercised


def test_hot_writes_do_not_bump_the_generation(world: dict[str, Any]) -> None:
    """What is written on every request or pull leaves the generation alone; every watched
    change bumps it."""
    engine = make_engine(world["url"])
    generation = "SELECT value FROM registry_decision_generation WHERE id = 1"
    assert lookup.GENERATION_TABLE in generation
    try:
        with engine.begin() as conn:
            before = conn.execute(text(generation)).scalar_one()
        with engine.begin() as conn:
            now = utcnow()
            conn.execute(text("UPDATE access_tokens SET last_used_at = :now"), {"now": now})
            conn.execute(text("UPDATE hub_repositories SET pull_count = pull_count + 1"))
            conn.execute(text("UPDATE accounts SET is_active = is_active"))  # no change
        with engine.begin() as conn:
            assert conn.execute(text(generation)).scalar_one() == before
        with engine.begin() as conn:
            conn.execute(text("UPDATE tiers SET public = NOT public"))
        with engine.begin() as conn:
            assert conn.execute(text(generation)).scalar_one() > before
    finally:
        engine.dispose()


def test_a_bulk_write_bumps_the_generation_once_per_transaction(
    world: dict[str, Any], backend: str
) -> None:
    """PostgreSQL: the row events of a bulk write bump the counter once at commit (one
    update per row made the commit of a bulk write quadratic in its rows); the next
    transaction bumps again, and a savepoint rolled back takes its bump with it."""
    if backend == "sqlite":
        pytest.skip("SQLite's triggers update the counter in place, row by row")
    engine = make_engine(world["url"])
    generation = text("SELECT value FROM registry_decision_generation WHERE id = 1")
    flip = text("UPDATE accounts SET is_admin = NOT is_admin")
    try:
        with engine.begin() as conn:
            before = conn.execute(generation).scalar_one()
            assert conn.execute(text("SELECT count(*) FROM accounts")).scalar_one() > 1
            conn.execute(flip)  # several rows, each a queued event
            conn.execute(flip)
        with engine.begin() as conn:
            assert conn.execute(generation).scalar_one() == before + 1
            conn.execute(flip)
        with engine.begin() as conn:
            assert conn.execute(generation).scalar_one() == before + 2
            with conn.begin_nested() as nested:
                conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the bump runs now
                conn.execute(flip)
                nested.rollback()
            conn.execute(text("SET CONSTRAINTS ALL DEFERRED"))
            conn.execute(flip)
        with engine.begin() as conn:
            assert conn.execute(generation).scalar_one() == before + 3
    finally:
        engine.dispose()


def test_concurrent_writers_do_not_deadlock_on_the_counter(world: dict[str, Any]) -> None:
    """PostgreSQL: the bump runs at commit, so the counter's row is the last lock a writer
    takes. Were it taken at the first watched write, this interleaving would deadlock: the
    first writer (counter held) waits for a row the second holds, and the second waits for
    the counter. Then writers on four connections at once all commit."""
    if not world["url"].startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time")
    import threading

    engine = make_engine(world["url"], pool_size=6)
    generation = text("SELECT value FROM registry_decision_generation WHERE id = 1")
    hot = text("UPDATE hub_repositories SET pull_count = pull_count + 1 WHERE name = 'alice/tools'")
    try:
        with engine.connect() as conn:
            before = conn.execute(generation).scalar_one()
        first, second = engine.connect(), engine.connect()
        for conn in (first, second):
            conn.begin()
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
        first.execute(text("UPDATE tiers SET public = NOT public"))  # watched
        second.execute(hot)  # the row the first will wait for
        second.execute(text("UPDATE memberships SET role = 'editor' WHERE role = 'viewer'"))
        errors: list[BaseException] = []

        def first_goes_on() -> None:
            try:
                first.execute(hot)  # waits for the second writer's commit
                first.commit()
            except BaseException as exc:
                errors.append(exc)

        waiter = threading.Thread(target=first_goes_on)
        waiter.start()
        time.sleep(0.3)
        second.commit()
        waiter.join(30)
        assert not waiter.is_alive() and not errors, errors
        first.close()
        second.close()

        def write(n: int) -> None:
            try:
                for i in range(20):
                    with engine.begin() as conn:
                        conn.execute(text("UPDATE tiers SET public = NOT public"))
                        conn.execute(hot)
                        role = "viewer" if (n + i) % 2 else "editor"
                        conn.execute(
                            text("UPDATE memberships SET role = :r WHERE role <> 'owner'"),
                            {"r": role},
                        )
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for w in writers:
            w.start()
        for w in writers:
            w.join(60)
        assert not errors, errors
        with engine.connect() as conn:
            assert conn.execute(generation).scalar_one() >= before + 2 + 4 * 20
    finally:
        engine.dispose()


def test_postgres_requests_share_a_counter_read_only_if_it_was_sent_after_them(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests waiting at once share one read of the counter; a request that arrives once
    a read has been sent waits for a read of its own, so a change committed before it
    arrived is seen even while the earlier read is still running."""
    if not world["url"].startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    import asyncio

    engine = make_engine(world["url"])
    db = lookup.open_db(engine)
    assert isinstance(db, lookup.PostgresDB)
    reads = [0]
    read = db._read_generation

    async def counted(batch: Any) -> None:
        reads[0] += 1
        await read(batch)

    monkeypatch.setattr(db, "_read_generation", counted)

    async def run() -> tuple[list[int], int, int]:
        together = await asyncio.gather(*(db.generation() for _ in range(20)))
        # a read that takes a while on the server (its snapshot is taken when it starts)
        slow = f"{lookup._PYFORMAT['generation']} AND pg_sleep(0.5) IS NOT NULL"
        monkeypatch.setitem(lookup._PYFORMAT, "generation", slow)
        first = asyncio.create_task(db.generation())
        await asyncio.sleep(0.2)  # sent, running on the server
        monkeypatch.setitem(lookup._PYFORMAT, "generation", slow.split(" AND pg_sleep")[0])
        with engine.begin() as conn:  # a change committed by another connection
            conn.execute(text("UPDATE tiers SET public = NOT public"))
        second = await db.generation()
        return list(together), await first, second

    try:
        together, first, second = asyncio.run(run())
    finally:
        db.close()
        engine.dispose()
    assert len(set(together)) == 1 and first == together[0]
    assert second > first  # not answered by the read sent before it arrived
    assert reads[0] == 3  # one for the twenty, one each for the other two


def test_a_transaction_of_many_rows_bumps_the_generation_once_on_postgres(
    world: dict[str, Any],
) -> None:
    """Every watched row's trigger runs at commit; only the first bumps (many updates of one
    row in one transaction take quadratic time), and the next commit bumps again."""
    engine = make_engine(world["url"])
    generation = text("SELECT value FROM registry_decision_generation WHERE id = 1")
    insert = text(
        "INSERT INTO hub_repositories (id, name, namespace, description, readme_md,"
        " visibility, private, pull_count, star_count, created_at)"
        " VALUES (:id, :name, 'alice', '', '', 'private', true, 0, 0, :now)"
    )
    sqlite = world["url"].startswith("sqlite")
    try:
        with engine.connect() as conn:
            before = conn.execute(generation).scalar_one()
        for batch in range(2):
            with engine.begin() as conn:
                now = utcnow()
                conn.execute(
                    insert,
                    [
                        {
                            "id": uuid.uuid4().hex if sqlite else uuid.uuid4(),
                            "name": f"alice/bulk-{batch}-{i}",
                            "now": now,
                        }
                        for i in range(500)
                    ],
                )
        with engine.connect() as conn:
            after = conn.execute(generation).scalar_one()
    finally:
        engine.dispose()
    # SQLite bumps per row (an update in place costs the same every time)
    assert after - before == (1000 if sqlite else 2)


def test_requests_missing_together_share_one_statement(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requests in flight when a row reaches its horizon (or of a worker just started)
    miss together: one statement runs, the others wait for it and check its row against a
    read of the counter like a cached one. A change committed while that statement ran,
    after they arrived, is still seen by them."""
    import asyncio

    engine = make_engine(world["url"])
    db = lookup.open_db(engine)
    statements: list[str] = []
    rows = db.rows

    async def counted(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        statements.append(statement)
        return await rows(statement, params)

    monkeypatch.setattr(db, "rows", counted)
    params = {"hash": _token_params(world["secrets"]["bob"])[0]}

    async def ask() -> dict[str, Any]:
        return await lookup.credential(db, "token", params, "acme/app", utcnow())

    async def run() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        together = await asyncio.gather(*(ask() for _ in range(20)))
        assert statements == ["token"]
        db.cache.clear()
        slow, plain = isinstance(db, lookup.PostgresDB), lookup._PYFORMAT["token"]
        if slow:  # a statement that runs a while on the server
            monkeypatch.setitem(lookup._PYFORMAT, "token", plain + " AND pg_sleep(0.5) IS NOT NULL")
        first = asyncio.create_task(ask())
        await asyncio.sleep(0.2)  # sent (on SQLite: done, the read is synchronous)
        monkeypatch.setitem(lookup._PYFORMAT, "token", plain)
        with engine.begin() as conn:  # revoked by another connection meanwhile
            conn.execute(text("UPDATE access_tokens SET revoked_at = created_at"))
        second = await ask()
        return list(together), await first, second

    try:
        together, first, second = asyncio.run(run())
    finally:
        db.close()
        engine.dispose()
    assert all(row is together[0] for row in together) and not together[0]["crevoked"]
    assert not first["crevoked"]  # its snapshot is from before the change
    assert second["crevoked"]  # the request that waited for it sees the change
    assert statements == ["token", "token", "token"]


def test_rows_read_together_do_not_expire_together() -> None:
    """A row's time bound (with no expiry or entitlement change before it) is 45-60 s, at
    random: rows read at once do not all reach it at the same instant."""
    codec = lookup._Codec("sqlite")
    now = utcnow()
    untils = {lookup._horizon({"cexpires": None, "horizon": None}, now, codec) for _ in range(64)}
    assert len(untils) > 32
    assert all(
        now + timedelta(seconds=45) <= until <= now + timedelta(seconds=60) for until in untils
    )
    soon = now + timedelta(seconds=10)  # an expiry before it still bounds the row exactly
    assert lookup._horizon({"cexpires": codec.time(soon), "horizon": None}, now, codec) == soon


def test_the_blocked_view_is_read_again_off_the_event_loop(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token endpoint's view of the keys over their limit (store.ratelimit) is read at
    once when it has never been read; every later refresh runs on a thread of the pool, so
    no request of the process waits for its round trips, and a block counted by another
    process still arrives through it."""
    import asyncio
    import threading

    from store import ratelimit
    from store.registry.credentials import unguessable_username

    app = world["app"]
    where: list[str] = []
    done = threading.Event()
    headers = _basic("bob", world["secrets"]["bob"])
    query = {"service": "store-registry", "scope": APP}
    with TestClient(app, base_url="http://store.test") as client:
        guard = ratelimit.token_guard(app, unguessable_username)
        refresh = guard.blocked.refresh

        def recorded(conn: Any, rules: Any, now: float | None = None) -> None:
            try:
                asyncio.get_running_loop()
                where.append("event loop")
            except RuntimeError:
                where.append("thread")
            refresh(conn, rules, now)
            done.set()

        monkeypatch.setattr(guard.blocked, "refresh", recorded)
        guard.blocked.clear()  # never read: read before answering
        assert client.get("/token", params=query, headers=headers).status_code == 200
        assert where == ["event loop"]
        engine = make_engine(world["url"])
        try:
            with engine.begin() as conn:  # another process counted this address's failures
                for _ in range(guard.limits.token_ip.limit):
                    ratelimit.hit(conn, guard.limits.token_ip, "testclient")
        finally:
            engine.dispose()
        done.clear()
        guard.blocked._next_refresh = 1.0  # read before, and due
        assert client.get("/token", params=query, headers=headers).status_code == 200
        assert done.wait(10)
        deadline = time.monotonic() + 10
        while registry_state(app)._background and time.monotonic() < deadline:
            time.sleep(0.01)  # its connection back in the pool before the engine goes
        assert where == ["event loop", "thread"]
        assert client.get("/token", params=query, headers=headers).status_code == 429


def test_the_signing_key_is_looked_up_again_off_the_event_loop(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every few seconds the signing key in force is looked up again (a rotation made by
    another process is picked up): for /token on a thread of the pool, awaited, so the
    request that found it due signs with the key in force."""
    import asyncio
    import threading

    from store.keys import service as keys

    app = world["app"]
    where: list[str] = []
    done = threading.Event()
    current_key = keys.current_key

    def recorded(session: Any, purpose: str) -> Any:
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("thread")
        found = current_key(session, purpose)
        done.set()
        return found

    headers = _basic("bob", world["secrets"]["bob"])
    query = {"service": "store-registry", "scope": APP}
    with TestClient(app, base_url="http://store.test") as client:
        assert client.get("/token", params=query, headers=headers).status_code == 200
        keyring = app.state.keyring
        loaded = keyring._loaded["registry"]
        monkeypatch.setattr(keys, "current_key", recorded)
        keyring._loaded["registry"] = (loaded[0] - 3600, loaded[1])  # due
        answer = client.get("/token", params=query, headers=headers)
        assert answer.status_code == 200
        assert done.is_set()  # looked up before the answer, not after it
        assert where == ["thread"]
        assert keyring._loaded["registry"][1].kid == loaded[1].kid
        assert time.monotonic() - keyring._loaded["registry"][0] < 60  # not due again


def test_requests_that_find_the_signing_key_due_together_share_one_look_up(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requests in flight when the signing key's look-up falls due wait for one look-up
    on one thread of the pool, not one thread each (which a worker then kept idle, each with
    its stack and malloc arena); each signs with the key in force."""
    import asyncio
    import threading

    import httpx

    app = world["app"]
    headers = _basic("bob", world["secrets"]["bob"])
    query = {"service": "store-registry", "scope": APP}
    keyring = app.state.keyring
    signer = keyring.signer
    on_threads: list[str] = []

    def counted(purpose: str) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # on a thread of the pool: slow enough for all to find it due
            on_threads.append(threading.current_thread().name)
            time.sleep(0.3)
        return signer(purpose)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://store.test") as c:
            first = await c.get("/token", params=query, headers=headers)
            assert first.status_code == 200
            loaded = keyring._loaded["registry"]
            keyring._loaded["registry"] = (loaded[0] - 3600, loaded[1])  # due
            monkeypatch.setattr(keyring, "signer", counted)
            try:
                return await asyncio.gather(
                    *(c.get("/token", params=query, headers=headers) for _ in range(8))
                )
            finally:
                registry_state(app).db.close()  # this loop's connections (no lifespan here)

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 8
    assert len(on_threads) == 1
    assert time.monotonic() - keyring._loaded["registry"][0] < 60  # not due again
    kid = keyring._loaded["registry"][1].kid
    for answer in answers:
        header = answer.json()["token"].split(".")[0]
        assert kid in base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)).decode()
