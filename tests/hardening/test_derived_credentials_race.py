"""A credential made from another never outlives a revocation of its source that happens at
the same instant in another process (docs/security.md, "Tokens made with tokens").

The deterministic races run on PostgreSQL (READ COMMITTED, real commits, two connections):
one side's transaction is held open after its work while the other side runs in a thread;
the held one commits once the other is seen waiting for it (``pg_blocking_pids``) or has
finished. Either way round, afterwards no live credential has a revoked source: the mint
that came first is found by the revocation, the mint that came second is refused. A
randomized run of threads minting and revoking checks the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import and_, exists, or_, select, text
from sqlalchemy.orm import Session, aliased, sessionmaker

from store import migrate, security
from store.accounts import service as accounts
from store.accounts import two_factor
from store.accounts.models import AccessToken, Account
from store.catalog import service as catalog
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.errors import StoreError, Unauthorized
from store.licensing import entitlements
from store.licensing import service as licensing
from store.licensing.models import Entitlement, License
from store.privacy import lifecycle
from store.registry import refresh
from store.registry.grants import Principal
from tests.factories import PASSWORD, make_account, make_org, make_product, paid_tier
from tests.pg import empty_database

WAIT_S = 60.0  # a bound on waiting for the other side, never a synchronisation

Refused = (Unauthorized, refresh.RefreshRefused)


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        secret_key="test-secret-key-0123456789",
        environment="test",
    )


@dataclass
class Db:
    factory: sessionmaker[Session]
    settings: Settings
    backend: str


@contextmanager
def _database(backend: str, directory: Path, label: str) -> Iterator[Db]:
    with empty_database(backend, directory, label) as url:
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            yield Db(make_sessionmaker(engine), _settings(directory, url), backend)
        finally:
            engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    with _database(request.param, tmp_path_factory.mktemp("derived"), "derived_race") as db:
        yield db


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    """Row locks under READ COMMITTED: PostgreSQL only (SQLite's writers take turns)."""
    with _database("postgresql", tmp_path_factory.mktemp("derived_pg"), "derived_pg") as db:
        yield db


# --- the invariant ------------------------------------------------------------------------


def orphans(session: Session) -> list[tuple[str, uuid.UUID]]:
    """Live credentials whose source is revoked (each with the reason)."""
    source = aliased(AccessToken)
    sibling = aliased(AccessToken)
    live = AccessToken.revoked_at.is_(None)
    found: list[tuple[str, uuid.UUID]] = []
    checks = {
        "source token revoked": exists().where(
            source.id == AccessToken.source_token_id, source.revoked_at.is_not(None)
        ),
        "source license revoked": exists().where(
            License.id == AccessToken.source_license_id, License.revoked_at.is_not(None)
        ),
        "password log-in with two-factor on": and_(
            AccessToken.kind == "refresh",
            AccessToken.source_kind == "password",
            exists().where(
                Account.id == AccessToken.account_id, Account.totp_enabled_at.is_not(None)
            ),
        ),
        "account deleted": exists().where(
            Account.id == AccessToken.account_id, Account.deleted_at.is_not(None)
        ),
        "family revoked": exists().where(
            sibling.family_id == AccessToken.family_id, sibling.revoked_at.is_not(None)
        ),
    }
    for reason, condition in checks.items():
        for token_id in session.scalars(select(AccessToken.id).where(live, condition)):
            found.append((reason, token_id))
    return found


# --- racing two transactions --------------------------------------------------------------


@dataclass
class Outcome:
    first: Any
    second: Any  # a result or the exception raised
    second_waited: bool  # seen waiting for the first's transaction


def _backend_pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _waits(db: Db, pid: int, done: threading.Event) -> bool:
    """Whether the backend ``pid`` is seen waiting for a lock before ``done`` is set."""
    deadline = time.monotonic() + WAIT_S
    with db.factory() as watch:
        while not done.is_set():
            blockers = watch.execute(text("SELECT pg_blocking_pids(:p)"), {"p": pid}).scalar_one()
            watch.rollback()
            if blockers:
                return True
            assert time.monotonic() < deadline, "the other side neither finished nor waited"
            done.wait(0.002)  # the poll's interval
    return False


def race(db: Db, first: Callable[[Session], Any], second: Callable[[Session], Any]) -> Outcome:
    """``first`` runs and keeps its transaction open; ``second`` runs in a thread on its own
    connection and commits (or rolls back when it raises); once it waits for ``first`` (or
    is done), ``first`` commits."""
    held = db.factory()
    try:
        first_result = first(held)
        held.flush()
        pids: queue.Queue[int] = queue.Queue()
        results: list[Any] = []
        done = threading.Event()

        def run() -> None:
            with db.factory() as other:
                try:
                    pids.put(_backend_pid(other))
                    results.append(second(other))
                    other.commit()
                except Exception as exc:  # the outcome under test
                    other.rollback()
                    results.append(exc)
                finally:
                    done.set()

        thread = threading.Thread(target=run)
        thread.start()
        waited = _waits(db, pids.get(timeout=WAIT_S), done)
        held.commit()
    finally:
        held.close()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    return Outcome(first_result, results[0], waited)


# --- the sources and what is made from them -----------------------------------------------


@dataclass
class Case:
    """One source kind: ``setup`` commits the source (a dict of ids and secrets), ``mint``
    makes a credential from it (its id, or None when refused quietly), ``revoke`` ends the
    source."""

    setup: Callable[[Session, Settings], dict[str, Any]]
    mint: Callable[[Session, Settings, dict[str, Any]], uuid.UUID | None]
    revoke: Callable[[Session, Settings, dict[str, Any]], None]


def _pat(session: Session, account: Account, via: AccessToken | None = None) -> AccessToken:
    return accounts.create_token(
        session,
        kind="personal",
        name="pat",
        scopes=["api", "pull", "push"],
        created_by=account,
        via=via,
    ).token


def _id_of(session: Session, secret: str | None) -> uuid.UUID | None:
    if secret is None:
        return None
    return session.scalar(
        select(AccessToken.id).where(AccessToken.token_hash == security.hash_token(secret))
    )


def _owner(session: Session, ids: dict[str, Any]) -> Account:
    return session.get_one(Account, ids["account"])


def _with_pat(session: Session, settings: Settings) -> dict[str, Any]:
    account = make_account(session)
    return {"account": account.id, "source": _pat(session, account).id}


def _child_of(session: Session, settings: Settings) -> dict[str, Any]:
    ids = _with_pat(session, settings)
    account = _owner(session, ids)
    child = _pat(session, account, via=session.get_one(AccessToken, ids["source"]))
    return {**ids, "child": child.id}


def _mint_with(key: str, kind: str = "personal") -> Callable[..., uuid.UUID | None]:
    def mint(session: Session, settings: Settings, ids: dict[str, Any]) -> uuid.UUID | None:
        # The request authenticated with the token (it was live then) ...
        via = session.get_one(AccessToken, ids[key])
        assert via.revoked_at is None
        return accounts.create_token(
            session,
            kind=kind,
            name="made with a token",
            scopes=["pull"],
            created_by=_owner(session, ids),
            org=session.get(accounts.Organization, ids["org"]) if kind == "robot" else None,
            via=via,
        ).token.id

    return mint


def _revoke_source(session: Session, settings: Settings, ids: dict[str, Any]) -> None:
    accounts.revoke_token(
        session, token=session.get_one(AccessToken, ids["source"]), actor=_owner(session, ids)
    )


def _with_org_pat(*, sole_owner: bool) -> Callable[[Session, Settings], dict[str, Any]]:
    def setup(session: Session, settings: Settings) -> dict[str, Any]:
        ids = _with_pat(session, settings)
        account = _owner(session, ids)
        org = make_org(session, account)
        if not sole_owner:
            other = make_account(session)
            accounts.add_member(
                session,
                org=org,
                actor=make_account(session, is_admin=True),
                account=other,
                role="owner",
            )
        return {**ids, "org": org.id}

    return setup


def _delete_account(session: Session, settings: Settings, ids: dict[str, Any]) -> None:
    lifecycle.delete_account(
        session, settings=settings, account=_owner(session, ids), password=PASSWORD
    )


def _mint_refresh_from_pat(
    session: Session, settings: Settings, ids: dict[str, Any]
) -> uuid.UUID | None:
    principal = Principal(
        kind="account",
        subject="someone",
        account_id=ids["account"],
        token_id=ids["source"],
        extra={"token_kind": "personal"},
    )
    secret = refresh.issue(session, settings, principal, client_id="docker", now=utcnow())
    return _id_of(session, secret)


def _with_license(session: Session, settings: Settings) -> dict[str, Any]:
    owner = make_account(session)
    org = make_org(session, owner)
    product = make_product(session, org, owner, tiers=[paid_tier("pro")])
    customer = make_account(session)
    entitlement = entitlements.create_entitlement(
        session,
        tier=catalog.get_tier_by_slug(session, product, "pro"),
        source="subscription",
        account=customer,
        starts_at=utcnow() - timedelta(days=1),
        ends_at=utcnow() + timedelta(days=30),
    )
    document = License(
        entitlement_id=entitlement.id,
        kid="test",
        token="not signed",
        expires_at=entitlement.ends_at,
    )
    session.add(document)
    session.flush()
    return {"account": customer.id, "entitlement": entitlement.id, "license": document.id}


def _mint_refresh_from_license(
    session: Session, settings: Settings, ids: dict[str, Any]
) -> uuid.UUID | None:
    principal = Principal(kind="license", subject="license", extra={"license_id": ids["license"]})
    secret = refresh.issue(session, settings, principal, client_id="docker", now=utcnow())
    return _id_of(session, secret)


def _revoke_license(session: Session, settings: Settings, ids: dict[str, Any]) -> None:
    licensing.revoke_licenses(
        session, session.get_one(Entitlement, ids["entitlement"]), reason="revoked"
    )


def _enrolling(session: Session, settings: Settings) -> dict[str, Any]:
    account = make_account(session)
    two_factor.begin(session, settings=settings, account=account)
    return {"account": account.id}


def _mint_password_refresh(
    session: Session, settings: Settings, ids: dict[str, Any]
) -> uuid.UUID | None:
    # The password was checked (two-factor sign-in was off then) ...
    assert _owner(session, ids).totp_enabled_at is None
    principal = Principal(kind="account", subject="someone", account_id=ids["account"])
    secret = refresh.issue(session, settings, principal, client_id="docker", now=utcnow())
    return _id_of(session, secret)


def _turn_two_factor_on(session: Session, settings: Settings, ids: dict[str, Any]) -> None:
    account = _owner(session, ids)
    code = pyotp.TOTP(two_factor._open(settings, account)).now()
    two_factor.confirm(session, settings=settings, account=account, code=code, password=PASSWORD)


def _refresh_from_pat(session: Session, settings: Settings) -> dict[str, Any]:
    ids = _with_pat(session, settings)
    principal = Principal(
        kind="account",
        subject="someone",
        account_id=ids["account"],
        token_id=ids["source"],
        extra={"token_kind": "personal"},
    )
    secret = refresh.issue(session, settings, principal, client_id="docker", now=utcnow())
    assert secret is not None
    return {**ids, "refresh": secret}


def _rotate(key: str) -> Callable[..., uuid.UUID | None]:
    def mint(session: Session, settings: Settings, ids: dict[str, Any]) -> uuid.UUID | None:
        redeemed = refresh.redeem(session, settings, ids[key], rotate=True, now=utcnow())
        return _id_of(session, redeemed.secret)

    return mint


def _password_refresh(session: Session, settings: Settings) -> dict[str, Any]:
    ids = _enrolling(session, settings)
    principal = Principal(kind="account", subject="someone", account_id=ids["account"])
    secret = refresh.issue(session, settings, principal, client_id="docker", now=utcnow())
    assert secret is not None
    return {**ids, "refresh": secret}


def _license_refresh(session: Session, settings: Settings) -> dict[str, Any]:
    ids = _with_license(session, settings)
    principal = Principal(kind="license", subject="license", extra={"license_id": ids["license"]})
    secret = refresh.issue(session, settings, principal, client_id="docker", now=utcnow())
    assert secret is not None
    return {**ids, "refresh": secret}


def _rotated_family(session: Session, settings: Settings) -> dict[str, Any]:
    ids = _refresh_from_pat(session, settings)
    rotated = refresh.redeem(session, settings, ids["refresh"], rotate=True, now=utcnow())
    return {**ids, "next": rotated.secret}


def _reuse_first(session: Session, settings: Settings, ids: dict[str, Any]) -> None:
    # The first token of the family presented again: every token of the family is revoked.
    with pytest.raises(refresh.RefreshRefused):
        refresh.redeem(session, settings, ids["refresh"], rotate=False, now=utcnow())


CASES = {
    "token made with a token": Case(_with_pat, _mint_with("source"), _revoke_source),
    "grandchild, its parent revoked by the grandparent": Case(
        _child_of, _mint_with("child"), _revoke_source
    ),
    "robot token made with a token, account deleted": Case(
        _with_org_pat(sole_owner=False), _mint_with("source", "robot"), _delete_account
    ),
    "robot token made with a token, account and its organization deleted": Case(
        _with_org_pat(sole_owner=True), _mint_with("source", "robot"), _delete_account
    ),
    "refresh token from a personal access token": Case(
        _with_pat, _mint_refresh_from_pat, _revoke_source
    ),
    "refresh token rotated, its personal access token revoked": Case(
        _refresh_from_pat, _rotate("refresh"), _revoke_source
    ),
    "refresh token rotated (a password log-in), two-factor sign-in turned on": Case(
        _password_refresh, _rotate("refresh"), _turn_two_factor_on
    ),
    "refresh token rotated (a license), the license revoked": Case(
        _license_refresh, _rotate("refresh"), _revoke_license
    ),
    "refresh token rotated, its family revoked by a reuse": Case(
        _rotated_family, _rotate("next"), _reuse_first
    ),
    "refresh token from a password log-in, account deleted": Case(
        _with_pat, _mint_password_refresh, _delete_account
    ),
    "refresh token from a license": Case(
        _with_license, _mint_refresh_from_license, _revoke_license
    ),
    "refresh token from a password log-in, two-factor sign-in turned on": Case(
        _enrolling, _mint_password_refresh, _turn_two_factor_on
    ),
}


def _made(db: Db, case: Case) -> dict[str, Any]:
    with session_scope(db.factory) as session:
        return case.setup(session, db.settings)


@pytest.mark.parametrize("name", list(CASES))
def test_a_mint_first_is_found_by_the_revocation(pg: Db, name: str) -> None:
    case = CASES[name]
    ids = _made(pg, case)
    earlier = _orphans(pg)
    outcome = race(
        pg,
        lambda s: case.mint(s, pg.settings, ids),
        lambda s: case.revoke(s, pg.settings, ids),
    )
    assert not isinstance(outcome.second, Exception), outcome.second
    made = outcome.first
    assert made is not None
    assert _orphans(pg) == earlier
    with pg.factory() as session:
        child = session.get(AccessToken, made)
        assert child is None or child.revoked_at is not None
    # The revocation waited for the mint's transaction (it holds the source).
    assert outcome.second_waited


@pytest.mark.parametrize("name", list(CASES))
def test_a_mint_after_the_revocation_is_refused(pg: Db, name: str) -> None:
    case = CASES[name]
    ids = _made(pg, case)
    earlier = _orphans(pg)
    before = _count(pg)
    outcome = race(
        pg,
        lambda s: case.revoke(s, pg.settings, ids),
        lambda s: case.mint(s, pg.settings, ids),
    )
    assert _orphans(pg) == earlier
    assert outcome.second is None or isinstance(outcome.second, Refused), outcome.second
    assert _count(pg) == before  # nothing was made
    assert outcome.second_waited


def _orphans(db: Db) -> set[tuple[str, uuid.UUID]]:
    """The database is the module's: a test compares with what was there before it."""
    with db.factory() as session:
        return set(orphans(session))


def _count(db: Db) -> int:
    with db.factory() as session:
        return len(list(session.scalars(select(AccessToken.id))))


# --- a source read before, checked again where the credential is made ---------------------


@pytest.mark.parametrize("name", list(CASES))
def test_a_source_revoked_after_the_request_authenticated_is_refused(db: Db, name: str) -> None:
    """Sequentially, on both backends: the source ends after the request saw it live, before
    the credential is made (the check must be repeated where the credential is written)."""
    case = CASES[name]
    ids = _made(db, case)
    earlier = _orphans(db)
    with db.factory() as request_session:
        # What the request read when it authenticated stays in its session (held here: the
        # identity map keeps only what is referenced).
        seen: list[Any] = [request_session.get(Account, ids["account"])]
        for key in ("source", "child"):
            if key in ids:
                seen.append(request_session.get(AccessToken, ids[key]))
        if "org" in ids:
            seen.append(request_session.get(accounts.Organization, ids["org"]))
        if "license" in ids:
            seen.append(request_session.get(License, ids["license"]))
        request_session.commit()
        with session_scope(db.factory) as other:
            case.revoke(other, db.settings, ids)
        try:
            made = case.mint(request_session, db.settings, ids)
        except (StoreError, refresh.RefreshRefused):
            made = None  # refused (an organization deleted with the account: not found)
        request_session.commit()
    assert made is None, seen
    assert _orphans(db) == earlier


# --- a randomized run -----------------------------------------------------------------------


class _Pool:
    """What the threads make and revoke, shared between them."""

    def __init__(self, tokens: list[uuid.UUID], license: uuid.UUID) -> None:
        self.lock = threading.Lock()
        self.tokens = list(tokens)
        self.refresh: list[str] = []
        self.licenses = [license]

    def pick(self, rng: random.Random, items: list[Any]) -> Any:
        with self.lock:
            return rng.choice(items) if items else None

    def add(self, items: list[Any], item: Any) -> None:
        if item is not None:
            with self.lock:
                items.append(item)


def _randomly(db: Db, pool: _Pool, ids: dict[str, Any], rng: random.Random, rounds: int) -> None:
    settings = db.settings
    for _ in range(rounds):
        op = rng.randrange(6)
        with db.factory() as session:
            try:
                if op == 0:  # a token made with a token
                    via = session.get_one(AccessToken, pool.pick(rng, pool.tokens))
                    made = accounts.create_token(
                        session,
                        kind="personal",
                        name="made with a token",
                        scopes=["pull"],
                        created_by=_owner(session, ids),
                        via=via,
                    ).token.id
                    session.commit()
                    pool.add(pool.tokens, made)
                elif op == 1:  # a revocation, with what was made from it
                    _revoke_source(
                        session, settings, {**ids, "source": pool.pick(rng, pool.tokens)}
                    )
                elif op == 2:  # a registry log-in with a personal access token
                    principal = Principal(
                        kind="account",
                        subject="someone",
                        account_id=ids["account"],
                        token_id=pool.pick(rng, pool.tokens),
                        extra={"token_kind": "personal"},
                    )
                    secret = refresh.issue(
                        session, settings, principal, client_id="x", now=utcnow()
                    )
                    session.commit()
                    pool.add(pool.refresh, secret)
                elif op == 3 and pool.refresh:  # a rotation
                    secret = pool.pick(rng, pool.refresh)
                    redeemed = refresh.redeem(session, settings, secret, rotate=True, now=utcnow())
                    session.commit()
                    pool.add(pool.refresh, redeemed.secret)
                elif op == 4:  # a registry log-in with a license
                    principal = Principal(
                        kind="license",
                        subject="license",
                        extra={"license_id": pool.pick(rng, pool.licenses)},
                    )
                    secret = refresh.issue(
                        session, settings, principal, client_id="x", now=utcnow()
                    )
                    session.commit()
                    pool.add(pool.refresh, secret)
                elif op == 5:  # the licenses revoked, a new one issued
                    _revoke_license(session, settings, ids)
                    document = License(
                        entitlement_id=ids["entitlement"], kid="test", token="not signed"
                    )
                    session.add(document)
                    session.commit()
                    pool.add(pool.licenses, document.id)
            except Refused:
                pass  # a source revoked by another thread: refused
            session.commit()  # a refused rotation's reuse revokes its family for good


def test_random_mints_and_revocations_leave_no_live_credential_of_a_revoked_source(
    db: Db,
) -> None:
    with session_scope(db.factory) as session:
        ids = _with_license(session, db.settings)
        account = _owner(session, ids)
        roots = [_pat(session, account).id for _ in range(3)]
    pool = _Pool(roots, ids["license"])
    earlier = _orphans(db)
    rounds = 40 if db.backend == "postgresql" else 20
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            _randomly(db, pool, ids, random.Random(seed), rounds)
        except BaseException as exc:  # reported below
            errors.append(exc)

    seed = random.randrange(1 << 30)
    threads = [threading.Thread(target=worker, args=(seed + n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 4)
    assert not errors, (seed, errors)
    assert _orphans(db) == earlier, seed
    with db.factory() as session:
        made = session.scalar(
            select(AccessToken.id).where(
                or_(
                    AccessToken.source_token_id.is_not(None),
                    AccessToken.source_license_id.is_not(None),
                )
            )
        )
    assert made is not None, seed  # something was made from something


@pytest.mark.parametrize(
    ("kind", "recovery_code"),
    [("personal", False), ("robot", False), ("personal", True), ("robot", True)],
)
def test_a_mint_between_its_source_lock_and_its_insert_does_not_deadlock_a_deletion(
    pg: Db, kind: str, recovery_code: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mint holds its source token; the account's deletion starts then and waits; the
    mint's insert (whose foreign keys take key-share locks of the account and organization)
    and its audit entry must not then wait for the deletion (which locks the organization
    to count its owners, and appends to the audit log when a recovery code is used): both
    finish, the new token revoked."""
    ids = _made(pg, CASES["robot token made with a token, account deleted"])
    code = ""
    if recovery_code:
        with session_scope(pg.factory) as session:
            account = _owner(session, ids)
            two_factor.begin(session, settings=pg.settings, account=account)
            _turn_two_factor_on(session, pg.settings, ids)
            code = two_factor.regenerate_codes(
                session,
                settings=pg.settings,
                account=account,
                code=pyotp.TOTP(two_factor._open(pg.settings, account)).at(
                    utcnow() + timedelta(seconds=30)
                ),
            )[0]
    locked, go_on = threading.Event(), threading.Event()
    real_lock = accounts.lock_source_token

    def lock_then_pause(*args: Any) -> Any:
        token = real_lock(*args)
        locked.set()
        go_on.wait(WAIT_S)
        return token

    monkeypatch.setattr(accounts, "lock_source_token", lock_then_pause)
    results: dict[str, Any] = {}
    pids: queue.Queue[int] = queue.Queue()
    deleted = threading.Event()

    def mint() -> None:
        with pg.factory() as session:
            try:
                results["mint"] = _mint_with("source", kind)(session, pg.settings, ids)
                session.commit()
            except Exception as exc:  # the outcome under test
                results["mint"] = exc

    def delete() -> None:
        with pg.factory() as session:
            try:
                pids.put(_backend_pid(session))
                lifecycle.delete_account(
                    session,
                    settings=pg.settings,
                    account=_owner(session, ids),
                    password=PASSWORD,
                    code=code,
                )
                session.commit()
                results["delete"] = None
            except Exception as exc:  # the outcome under test
                results["delete"] = exc
            finally:
                deleted.set()

    minting = threading.Thread(target=mint)
    minting.start()
    assert locked.wait(WAIT_S)
    deleting = threading.Thread(target=delete)
    deleting.start()
    _waits(pg, pids.get(timeout=WAIT_S), deleted)
    go_on.set()
    for thread in (minting, deleting):
        thread.join(WAIT_S)
        assert not thread.is_alive()
    assert not isinstance(results["mint"], Exception), results["mint"]
    assert results["delete"] is None, results["delete"]
    with pg.factory() as session:
        child = session.get_one(AccessToken, results["mint"])
        assert child.revoked_at is not None
