"""The last owner of an organization can neither leave nor be demoted, even when the two
remaining owners leave (or demote each other) at the same moment: on SQLite and PostgreSQL,
with real commits from several threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from store import migrate
from store.accounts import service as accounts
from store.accounts.models import Membership
from store.db import make_engine, make_sessionmaker, session_scope
from store.errors import Conflict, Forbidden
from tests.factories import make_account, make_org
from tests.pg import empty_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path, "owner_races") as url:
        yield url


def _meet(monkeypatch: pytest.MonkeyPatch, parties: int) -> None:
    """Every owner count waits (at most 2 s) until ``parties`` transactions have counted: the
    counts are taken before either change is written, wherever the database lets them be."""
    counted = threading.Semaphore(0)
    arrived = threading.Lock()
    seen = [0]
    real = accounts.owner_count

    def counting(session, org):  # type: ignore[no-untyped-def]
        n = real(session, org)
        with arrived:
            seen[0] += 1
            if seen[0] == parties:
                for _ in range(parties):
                    counted.release()
        counted.acquire(timeout=2)
        return n

    monkeypatch.setattr(accounts, "owner_count", counting)


@pytest.mark.parametrize("how", ["leave", "demote"])
def test_two_owners_at_once_leave_one_owner(
    database_url: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            ann, bob = make_account(session, "ann"), make_account(session, "bob")
            org = make_org(session, ann, "duo")
            accounts.add_member(
                session,
                org=org,
                actor=make_account(session, "operator1", is_admin=True),
                account=bob,
                role="owner",
            )
        _meet(monkeypatch, 2)
        errors: list[BaseException] = []
        refused: list[Conflict | Forbidden] = []

        def act(actor: str, target: str) -> Callable[[], None]:
            def run() -> None:
                try:
                    with session_scope(factory) as own:
                        who = accounts.get_account_by_username(own, actor)
                        duo = accounts.get_organization(own, "duo")
                        if how == "leave":
                            accounts.remove_member(own, org=duo, actor=who, username=target)
                        else:
                            accounts.change_role(
                                own, org=duo, actor=who, username=target, role="editor"
                            )
                except (Conflict, Forbidden) as exc:  # the last owner, or no longer one
                    refused.append(exc)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            return run

        # Each leaves (or each demotes the other).
        pairs = (
            [("ann", "ann"), ("bob", "bob")]
            if how == "leave"
            else [
                ("ann", "bob"),
                ("bob", "ann"),
            ]
        )
        threads = [threading.Thread(target=act(a, t)) for a, t in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        with factory() as session:
            duo = accounts.get_organization(session, "duo")
            owners = session.scalar(
                select(func.count()).where(
                    Membership.organization_id == duo.id, Membership.role == "owner"
                )
            )
        assert owners == 1 and len(refused) == 1
    finally:
        engine.dispose()


def test_an_owner_deleting_their_account_while_the_other_leaves_leaves_one_owner(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from store.config import Settings
    from store.privacy import lifecycle
    from tests.factories import PASSWORD, make_product

    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            ann, bob = make_account(session, "ann"), make_account(session, "bob")
            org = make_org(session, ann, "duo")
            make_product(session, org, ann, "thing")  # not empty: it outlives its owners
            accounts.add_member(
                session,
                org=org,
                actor=make_account(session, "operator1", is_admin=True),
                account=bob,
                role="owner",
            )
        settings = Settings(
            data_dir=tmp_path / "settings",
            database_url=database_url,
            secret_key="test-secret-key-0123456789",
            public_url="http://store.test",
            environment="test",
        )
        _meet(monkeypatch, 2)
        errors: list[BaseException] = []
        refused: list[Conflict] = []

        def delete_ann() -> None:
            try:
                with session_scope(factory) as own:
                    who = accounts.get_account_by_username(own, "ann")
                    lifecycle.delete_account(own, settings=settings, account=who, password=PASSWORD)
            except Conflict as exc:
                refused.append(exc)
            except BaseException as exc:  # reported below
                errors.append(exc)

        def bob_leaves() -> None:
            try:
                with session_scope(factory) as own:
                    who = accounts.get_account_by_username(own, "bob")
                    duo = accounts.get_organization(own, "duo")
                    accounts.remove_member(own, org=duo, actor=who, username="bob")
            except Conflict as exc:
                refused.append(exc)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in (delete_ann, bob_leaves)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        with factory() as session:
            duo = accounts.get_organization(session, "duo")
            owners = session.scalar(
                select(func.count()).where(
                    Membership.organization_id == duo.id, Membership.role == "owner"
                )
            )
        assert owners == 1 and len(refused) == 1
    finally:
        engine.dispose()
