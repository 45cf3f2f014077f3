"""One namespace for usernames and organization slugs, and the migration that makes it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from store import migrate
from store.accounts import service
from store.accounts.models import Namespace
from store.db import make_engine, utcnow
from store.errors import Conflict, ValidationFailed
from tests.factories import PASSWORD, make_account, make_org


def test_a_username_takes_the_name_for_organizations(session: Session) -> None:
    alice = make_account(session, "alice")
    with pytest.raises(Conflict) as taken:
        make_org(session, alice, "alice")
    assert taken.value.code == "namespace_taken"
    row = session.get(Namespace, "alice")
    assert row is not None and (row.kind, row.account_id) == ("user", alice.id)


def test_an_organization_takes_the_name_for_usernames(session: Session) -> None:
    acme = make_org(session, make_account(session, "alice"), "acme")
    with pytest.raises(Conflict) as taken:
        service.create_account(session, username="acme", email="a@example.com", password=PASSWORD)
    assert taken.value.code == "username_taken"
    row = session.get(Namespace, "acme")
    assert row is not None and (row.kind, row.organization_id) == ("organization", acme.id)
    # The failed sign-up left nothing behind and the session goes on.
    assert service.find_account(session, "a@example.com") is None
    make_account(session, "acme-fan")


@pytest.mark.parametrize("name", ["library", "admin", "store", "token", "root"])
def test_reserved_names_are_refused_for_both(session: Session, name: str) -> None:
    with pytest.raises(ValidationFailed, match="reserved"):
        service.create_account(session, username=name, email="r@example.com", password=PASSWORD)
    with pytest.raises(ValidationFailed, match="reserved"):
        make_org(session, make_account(session), name)


def test_a_name_claimed_by_a_concurrent_writer_is_a_conflict(session: Session) -> None:
    """The namespace row is the guarantee: even when the pre-check cannot see the other
    claim (another process, same instant), the insert fails with a Conflict, not a 500."""
    alice = make_account(session, "alice")
    carl = make_account(session, "carl")
    session.delete(session.get(Namespace, "carl"))
    session.flush()
    session.add(Namespace(name="race", kind="user", account_id=carl.id))
    session.flush()
    original = service.namespace_taken
    try:
        service.namespace_taken = lambda _s, _n: False  # type: ignore[assignment]
        with pytest.raises(Conflict):
            make_org(session, alice, "race")
        with pytest.raises(Conflict):
            service.create_account(
                session, username="race", email="x@example.com", password=PASSWORD
            )
    finally:
        service.namespace_taken = original  # type: ignore[assignment]
    assert service.find_account(session, "x@example.com") is None


# --- the migration ---------------------------------------------------------------------


def _insert_account(conn: sa.Connection, username: str) -> None:
    sqlite = conn.dialect.name == "sqlite"
    now = utcnow()
    conn.execute(
        sa.text(
            "INSERT INTO accounts (id, username, email, display_name, password_hash, is_admin,"
            " is_active, created_at, password_changed_at) VALUES (:id, :u, :e, :u, 'x',"
            " false, true, :now, :now)"
        ),
        {
            "id": uuid.uuid4().hex if sqlite else uuid.uuid4(),
            "u": username,
            "e": f"{username}@example.com",
            "now": now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now,
        },
    )


def _insert_org(conn: sa.Connection, slug: str) -> None:
    sqlite = conn.dialect.name == "sqlite"
    now = utcnow()
    conn.execute(
        sa.text(
            "INSERT INTO organizations (id, slug, name, description, website, created_at,"
            " verification_note) VALUES (:id, :s, :s, '', '', :now, '')"
        ),
        {
            "id": uuid.uuid4().hex if sqlite else uuid.uuid4(),
            "s": slug,
            "now": now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now,
        },
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ns.db'}"
        return
    if not os.environ.get("STORE_TEST_DATABASE_URL"):
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    from tests.pg import scratch_database

    with scratch_database("namespaces") as url:
        yield url


def test_migration_refuses_collisions_and_names_them(scratch_url: str) -> None:
    engine = make_engine(scratch_url)
    try:
        migrate.upgrade(engine, "0120")
        with engine.begin() as conn:
            for username in ("alice", "acme", "bob", "library"):
                _insert_account(conn, username)
            for slug in ("acme", "bob", "other", "v2"):
                _insert_org(conn, slug)
        with pytest.raises(Exception) as refused:
            migrate.upgrade(engine)
        message = str(refused.value)
        assert "'acme' is the username of an account and the slug of an organization" in message
        assert "'bob' is the username" in message
        assert "'library' is a reserved name held by an account" in message
        assert "'v2' is a reserved name held by an organization" in message
        assert "alice" not in message and "other" not in message
        assert migrate.current_revisions(engine) == {"0120"}
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("namespaces")
        # Renamed: the upgrade goes through and copies every name in.
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE organizations SET slug = 'acme-inc' WHERE slug = 'acme'"))
            conn.execute(sa.text("UPDATE organizations SET slug = 'bob-co' WHERE slug = 'bob'"))
            conn.execute(sa.text("UPDATE organizations SET slug = 'v2-co' WHERE slug = 'v2'"))
            conn.execute(sa.text("UPDATE accounts SET username = 'lib' WHERE username = 'library'"))
        migrate.upgrade(engine)
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT name, kind FROM namespaces")).all())
        assert rows == {
            "alice": "user",
            "acme": "user",
            "bob": "user",
            "lib": "user",
            "acme-inc": "organization",
            "bob-co": "organization",
            "other": "organization",
            "v2-co": "organization",
        }
    finally:
        engine.dispose()
