"""Operator commands: admin, users, orgs, products, tiers, entitlements, tokens.

The tests of this module share one database and build on each other in order, as an
operator would: first an administrator, then accounts, publishers, products...
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import security
from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account, Membership, Organization
from store.catalog.models import Product, Tier
from store.licensing.models import Entitlement
from tests.cli._support import Run

PASSWORD = "correct horse battery"


def test_operator_commands_need_an_administrator(run: Run) -> None:
    result = run("products", "publish", "acme/widget")
    assert result.code == 1
    assert "store admin create" in result.err
    assert result.out == ""


def test_admin_create(run: Run, db: Session) -> None:
    result = run(
        "admin", "create", "--username", "root-op", "--email", "Root@Example.com",
        "--password-stdin", "--json", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = result.json()
    assert data["username"] == "root-op"
    assert data["email"] == "root@example.com"
    assert data["is_admin"] is True
    assert data["created"] is True
    account = db.scalar(select(Account).where(Account.username == "root-op"))
    assert account is not None and account.is_admin
    assert security.verify_password(account.password_hash, PASSWORD)

    again = run("admin", "create", "--username", "root-op", "--email", "root@example.com",
                "--password", PASSWORD)  # fmt: skip
    assert again.code == 1
    assert "--promote" in again.err


def test_admin_create_promotes_an_existing_account(run: Run, db: Session) -> None:
    assert run("users", "create", "--username", "bob", "--email", "bob@example.com",
               "--password", PASSWORD).code == 0  # fmt: skip
    wrong = run("admin", "create", "--username", "bob", "--email", "x@example.com", "--promote")
    assert wrong.code == 1
    assert "e-mail" in wrong.err

    result = run("admin", "create", "--username", "bob", "--email", "bob@example.com",
                 "--promote", "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert result.json()["created"] is False
    assert result.json()["is_admin"] is True
    assert db.scalar(select(Account.is_admin).where(Account.username == "bob")) is True


def test_password_is_prompted_for_on_a_terminal(
    run: Run, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    answers = iter(["prompted-password-1", "prompted-password-1"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", Tty())
    result = run("users", "create", "--username", "pat", "--email", "pat@example.com")
    assert result.code == 0, result.err
    pat = accounts.get_account_by_username(db, "pat")
    assert security.verify_password(pat.password_hash, "prompted-password-1")

    mismatch = iter(["one-password-11", "another-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(mismatch))
    result = run("users", "create", "--username", "pam", "--email", "pam@example.com")
    assert result.code == 1
    assert "do not match" in result.err


def test_without_a_terminal_the_password_must_be_given(run: Run) -> None:
    result = run("users", "create", "--username", "quinn", "--email", "q@example.com", stdin="")
    assert result.code == 1
    assert "--password-stdin" in result.err


def test_users(run: Run, db: Session) -> None:
    created = run("users", "create", "--username", "alice", "--email", "alice@example.com",
                  "--display-name", "Alice A.", "--password", PASSWORD, "--json")  # fmt: skip
    assert created.code == 0, created.err
    assert set(created.json()) == {
        "id", "username", "email", "display_name", "is_admin", "is_active", "created_at",
    }  # fmt: skip

    listing = run("users", "list", "--json")
    assert listing.code == 0
    assert [u["username"] for u in listing.json()] == sorted(u["username"] for u in listing.json())
    assert "alice" in [u["username"] for u in listing.json()]
    assert [u["username"] for u in run("users", "list", "--query", "ALI", "--json").json()] == [
        "alice"
    ]
    assert "alice@example.com" in run("users", "list").out

    shown = run("users", "show", "alice", "--json").json()
    assert shown["display_name"] == "Alice A."
    assert shown["organizations"] == []
    assert shown["tokens"] == 0
    assert "Alice A." in run("users", "show", "alice").out

    assert run("users", "set-admin", "alice", "on", "--json").json()["is_admin"] is True
    assert run("users", "set-admin", "alice", "off").code == 0
    assert run("users", "disable", "alice", "--json").json()["is_active"] is False
    assert db.scalar(select(Account.is_active).where(Account.username == "alice")) is False
    assert run("users", "enable", "alice").code == 0

    changed = run("users", "set-password", "alice", "--password-stdin", stdin="new password 42\n")
    assert changed.code == 0, changed.err
    db.rollback()  # end the read snapshot; see what the CLI committed
    assert accounts.authenticate(db, login="alice", password="new password 42").username == "alice"


def test_the_last_administrator_stays(run: Run, db: Session) -> None:
    assert run("users", "set-admin", "bob", "off").code == 0
    assert run("users", "disable", "pat").code == 0
    result = run("users", "set-admin", "root-op", "off")
    assert result.code == 1
    assert "last active administrator" in result.err
    assert run("users", "disable", "root-op").code == 1
    assert db.scalar(select(Account.is_admin).where(Account.username == "root-op")) is True


def test_orgs(run: Run, db: Session) -> None:
    created = run("orgs", "create", "--owner", "alice", "--slug", "acme", "--name", "Acme Corp",
                  "--website", "https://acme.example", "--json")  # fmt: skip
    assert created.code == 0, created.err
    assert created.json()["slug"] == "acme"
    assert created.json()["verified"] is False

    verified = run("orgs", "verify", "acme", "--note", "checked the domain", "--json")
    assert verified.code == 0, verified.err
    assert verified.json()["verified"] is True
    assert verified.json()["verification_note"] == "checked the domain"
    assert [o["slug"] for o in run("orgs", "list", "--verified", "--json").json()] == ["acme"]
    assert run("orgs", "list", "--unverified", "--json").json() == []

    assert run("orgs", "add-member", "acme", "bob", "--role", "viewer").code == 0
    promoted = run("orgs", "add-member", "acme", "bob", "--role", "editor", "--json")
    assert promoted.json() == {"org": "acme", "username": "bob", "role": "editor"}
    shown = run("orgs", "show", "acme", "--json").json()
    assert shown["members"] == [
        {"username": "alice", "role": "owner"},
        {"username": "bob", "role": "editor"},
    ]
    org = db.scalar(select(Organization).where(Organization.slug == "acme"))
    assert org is not None
    assert db.scalar(select(Membership.role).where(Membership.organization_id == org.id,
                     Membership.account_id == accounts.get_account_by_username(db, "bob").id)) == "editor"  # fmt: skip

    assert run("orgs", "unverify", "acme", "--json").json()["verified"] is False
    assert run("orgs", "verify", "acme").code == 0

    duplicate = run("orgs", "create", "--owner", "alice", "--slug", "acme", "--name", "Again")
    assert duplicate.code == 1
    assert "taken" in duplicate.err


def test_products_and_tiers(run: Run, db: Session, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Widget\n\nA *fine* widget.\n")
    created = run(
        "products", "create", "--org", "acme", "--slug", "widget", "--title", "Widget Server",
        "--kind", "image", "--summary", "Serves widgets", "--description-file", str(readme),
        "--categories", "databases,storage", "--platforms", "linux/amd64,linux/arm64", "--json",
    )  # fmt: skip
    assert created.code == 0, created.err
    product = created.json()
    assert product["repository"] == "acme/widget"
    assert product["status"] == "draft"
    assert product["categories"] == ["databases", "storage"]
    assert product["platforms"] == ["linux/amd64", "linux/arm64"]
    assert product["description_md"].startswith("# Widget")

    no_tiers = run("products", "publish", "acme/widget")
    assert no_tiers.code == 1
    assert "tier" in no_tiers.err

    free = run("tiers", "create", "acme/widget", "--slug", "community", "--billing", "free",
               "--public", "--json")  # fmt: skip
    assert free.code == 0, free.err
    assert free.json()["public"] is True
    pro = run(
        "tiers", "create", "acme/widget", "--slug", "pro", "--name", "Pro", "--billing", "month",
        "--price", "49.00", "--currency", "EUR", "--trial-days", "14", "--seats", "5",
        "--feature", "Priority support", "--feature", "SSO", "--json",
    )  # fmt: skip
    assert pro.code == 0, pro.err
    assert pro.json()["amount_minor"] == 4900
    assert pro.json()["currency"] == "eur"
    assert pro.json()["price"] == "49.00"
    assert pro.json()["features"] == ["Priority support", "SSO"]
    yen = run("tiers", "create", "acme/widget", "--slug", "jp", "--billing", "one_time",
              "--price", "5000", "--currency", "jpy", "--json")  # fmt: skip
    assert yen.json()["amount_minor"] == 5000

    tiers = run("tiers", "list", "acme/widget", "--json").json()
    assert [t["slug"] for t in tiers] == ["community", "pro", "jp"]
    assert "49.00" in run("tiers", "list", "acme/widget").out

    updated = run("tiers", "update", "acme/widget", "pro", "--price", "59.5", "--unlimited-seats",
                  "--json")  # fmt: skip
    assert updated.code == 0, updated.err
    assert updated.json()["amount_minor"] == 5950
    assert updated.json()["seats"] is None
    # The command told the payment gateway after its commit: the repriced plan exists.
    db.expire_all()
    plan = db.scalar(select(Tier.gateway_price_ref).where(Tier.slug == "pro"))
    assert plan is not None and plan.endswith("_month_5950eur")
    assert run("tiers", "deactivate", "acme/widget", "jp", "--json").json()["active"] is False

    published = run("products", "publish", "acme/widget", "--json")
    assert published.code == 0, published.err
    assert published.json()["status"] == "published"
    refused = run("products", "badge", "acme/widget", "--certified", "on")
    assert refused.code == 1 and "certification review" in refused.err
    badges = run("products", "badge", "acme/widget", "--official", "on", "--json")
    assert badges.json()["official"] is True
    assert badges.json()["certified"] is False

    suspended = run("products", "suspend", "acme/widget", "--reason", "Malware report", "--json")
    assert suspended.json()["status"] == "suspended"
    assert suspended.json()["status_reason"] == "Malware report"
    assert [p["repository"] for p in run("products", "list", "--status", "suspended",
                                         "--json").json()] == ["acme/widget"]  # fmt: skip
    assert run("products", "reinstate", "acme/widget", "--json").json()["status"] == "published"

    assert run("products", "update", "acme/widget", "--title", "Widget Server 2").code == 0
    shown = run("products", "show", "acme/widget", "--json").json()
    assert shown["title"] == "Widget Server 2"
    assert [t["slug"] for t in shown["tiers"]] == ["community", "pro", "jp"]
    assert "Widget Server 2" in run("products", "show", "acme/widget").out
    assert [p["repository"] for p in run("products", "list", "--org", "acme", "--json").json()] == [
        "acme/widget"
    ]

    row = db.scalar(select(Product).where(Product.repository == "acme/widget"))
    assert row is not None and row.status == "published" and row.official
    assert db.scalar(select(Tier.amount_minor).where(Tier.product_id == row.id,
                                                     Tier.slug == "pro")) == 5950  # fmt: skip


def test_a_failed_command_writes_nothing(run: Run, db: Session) -> None:
    # The edit is applied to the tier before the service finds the product would be left
    # without an active tier; the rollback must undo it.
    assert run("tiers", "deactivate", "acme/widget", "pro").code == 0
    result = run("tiers", "deactivate", "acme/widget", "community")
    assert result.code == 1
    assert "active tier" in result.err
    tiers = run("tiers", "list", "acme/widget", "--json").json()
    assert {t["slug"]: t["active"] for t in tiers} == {"community": True, "pro": False, "jp": False}
    assert run("tiers", "activate", "acme/widget", "pro").code == 0


def test_entitlements(run: Run, db: Session) -> None:
    granted = run("entitlements", "grant", "acme/widget", "pro", "--user", "bob",
                  "--until", "2099-01-01", "--reason", "Partner", "--json")  # fmt: skip
    assert granted.code == 0, granted.err
    ent = granted.json()
    assert ent["holder"] == {"type": "account", "name": "bob"}
    assert ent["source"] == "grant"
    assert ent["ends_at"].startswith("2099-01-01T00:00:00")
    assert ent["effective_status"] == "active"
    org_grant = run("entitlements", "grant", "acme/widget", "community", "--org", "acme", "--json")
    assert org_grant.code == 0, org_grant.err

    by_user = run("entitlements", "list", "--user", "bob", "--json").json()
    assert {e["id"] for e in by_user} == {ent["id"], org_grant.json()["id"]}  # bob is in acme
    assert [e["id"] for e in run("entitlements", "list", "--org", "acme", "--json").json()] == [
        org_grant.json()["id"]
    ]
    assert len(run("entitlements", "list", "--product", "acme/widget", "--json").json()) == 2
    assert len(run("entitlements", "list", "--json").json()) == 2
    assert "acme/widget" in run("entitlements", "list").out
    assert run("entitlements", "show", ent["id"], "--json").json()["reason"] == "Partner"

    no_reason = run("entitlements", "revoke", ent["id"])
    assert no_reason.code == 2
    revoked = run("entitlements", "revoke", ent["id"], "--reason", "Contract ended", "--json")
    assert revoked.code == 0, revoked.err
    assert revoked.json()["status"] == "revoked"
    row = db.get(Entitlement, __import__("uuid").UUID(ent["id"]))
    assert row is not None and row.status == "revoked" and row.reason == "Contract ended"

    missing = run("entitlements", "revoke", "00000000-0000-0000-0000-000000000000",
                  "--reason", "x")  # fmt: skip
    assert missing.code == 1
    assert "No such entitlement" in missing.err


def test_tokens(run: Run, db: Session) -> None:
    created = run("tokens", "create", "--user", "bob", "--name", "laptop", "--scope", "pull",
                  "--scope", "push", "--expires-days", "30", "--json")  # fmt: skip
    assert created.code == 0, created.err
    token = created.json()
    assert token["secret"].startswith("stp_")
    assert token["scopes"] == ["pull", "push"]
    assert token["owner"] == {"type": "account", "name": "bob"}
    resolved = accounts.resolve_token(db, token["secret"])
    assert resolved is not None and str(resolved.id) == token["id"]

    human = run("tokens", "create", "--user", "bob", "--name", "ci", "--scope", "pull")
    assert human.code == 0
    assert "stp_" in human.out

    robot = run("tokens", "create", "--org", "acme", "--name", "deploy", "--scope", "pull",
                "--json")  # fmt: skip
    assert robot.code == 0, robot.err
    assert robot.json()["secret"].startswith("str_")
    bad_scope = run("tokens", "create", "--org", "acme", "--name", "x", "--scope", "api")
    assert bad_scope.code == 1
    assert "scope" in bad_scope.err

    listed = run("tokens", "list", "--user", "bob", "--json").json()
    assert {t["name"] for t in listed} == {"laptop", "ci"}
    assert all("secret" not in t for t in listed)
    assert [t["name"] for t in run("tokens", "list", "--org", "acme", "--json").json()] == [
        "deploy"
    ]

    revoked = run("tokens", "revoke", token["id"], "--json")
    assert revoked.code == 0, revoked.err
    assert revoked.json()["revoked_at"] is not None
    assert {t["name"] for t in run("tokens", "list", "--user", "bob", "--json").json()} == {"ci"}
    everything = run("tokens", "list", "--user", "bob", "--include-revoked", "--json").json()
    assert len(everything) == 2
    db.rollback()  # end the read snapshot; see what the CLI committed
    assert db.scalar(select(AccessToken.revoked_at).where(AccessToken.name == "laptop"))


def test_acting_as_another_administrator(run: Run) -> None:
    assert run("products", "badge", "acme/widget", "--official", "off", "--as", "root-op").code == 0
    not_admin = run("products", "badge", "acme/widget", "--official", "on", "--as", "alice")
    assert not_admin.code == 1
    assert "not an active administrator" in not_admin.err
    unknown = run("products", "badge", "acme/widget", "--official", "on", "--as", "nobody")
    assert unknown.code == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["users", "show", "nobody"], "No account named 'nobody'"),
        (["orgs", "show", "nowhere"], "No organization named 'nowhere'"),
        (["products", "show", "acme/nothing"], "No product for acme/nothing"),
        (["tiers", "update", "acme/widget", "gold", "--name", "Gold"], "has no tier 'gold'"),
        (["tokens", "revoke", "00000000-0000-0000-0000-000000000000"], "No such token"),
        (
            [
                "users",
                "create",
                "--username",
                "zed",
                "--email",
                "not-an-address",
                "--password",
                PASSWORD,
            ],
            "valid e-mail",
        ),
        (
            [
                "users",
                "create",
                "--username",
                "alice",
                "--email",
                "other@example.com",
                "--password",
                PASSWORD,
            ],
            "taken",
        ),
        (
            [
                "tiers",
                "create",
                "acme/widget",
                "--slug",
                "cheap",
                "--billing",
                "month",
                "--price",
                "1.001",
            ],
            "decimals",
        ),
    ],
)
def test_user_errors_exit_1_with_a_message(run: Run, argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.code == 1
    assert message in result.err
    assert result.err.startswith("error: ")
    assert result.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["users"],
        ["users", "frobnicate"],
        ["users", "set-admin", "alice", "maybe"],
        ["products", "show", "no-slash"],
        ["products", "suspend", "acme/widget"],
        ["products", "badge", "acme/widget"],
        ["products", "create", "--org", "acme", "--slug", "x", "--title", "X", "--kind", "vm"],
        ["tiers", "create", "acme/widget", "--slug", "p", "--billing", "month"],
        ["tiers", "create", "acme/widget", "--slug", "p", "--billing", "month", "--price", "-1"],
        ["entitlements", "grant", "acme/widget", "pro"],
        ["entitlements", "grant", "acme/widget", "pro", "--user", "bob", "--org", "acme"],
        ["entitlements", "grant", "acme/widget", "pro", "--user", "bob", "--until", "soon"],
        ["entitlements", "show", "not-a-uuid"],
        ["tokens", "create", "--user", "bob", "--name", "x"],
        ["tokens", "create", "--user", "bob", "--name", "x", "--scope", "admin"],
        ["admin", "create", "--username", "x"],
    ],
)
def test_usage_errors_exit_2(run: Run, argv: list[str]) -> None:
    result = run(*argv)
    assert result.code == 2
    assert "usage:" in result.err


def test_no_command_prints_help(run: Run) -> None:
    result = run()
    assert result.code == 2
    assert "usage: store" in result.out


def test_tokens_list_shows_registry_log_ins(run: Run, db: Session) -> None:
    from store.config import Settings
    from store.db import utcnow
    from store.registry import refresh
    from store.registry.grants import Principal

    bob = accounts.get_account_by_username(db, "bob")
    principal = Principal(kind="account", subject="bob", account_id=bob.id)
    secret = refresh.issue(db, Settings(), principal, client_id="docker", now=utcnow())
    assert secret is not None
    db.commit()
    listed = run("tokens", "list", "--user", "bob", "--json").json()
    logins = [t for t in listed if t["kind"] == "refresh"]
    assert len(logins) == 1
    assert logins[0]["source"] == "password" and logins[0]["client"] == "docker"
    assert logins[0]["prefix"] == secret[:12]
    assert "refresh" in run("tokens", "list", "--user", "bob").out
    revoked = run("tokens", "revoke", logins[0]["id"], "--json")
    assert revoked.code == 0, revoked.err
    listed = run("tokens", "list", "--user", "bob", "--json").json()
    assert not [t for t in listed if t["kind"] == "refresh"]


def test_sessions_list_and_end(run: Run, db: Session) -> None:
    from store.accounts import sessions
    from store.audit.models import AuditEvent

    bob = accounts.get_account_by_username(db, "bob")
    life = sessions.Lifetimes()
    laptop, _ = sessions.start_session(
        db, account=bob, user_agent="Laptop/1.0", address="10.0.0.5", lifetimes=life
    )
    phone, _ = sessions.start_session(
        db, account=bob, user_agent="Phone/2.0", address="10.0.0.6", lifetimes=life
    )
    listed = run("sessions", "list", "--user", "bob", "--json")
    assert listed.code == 0, listed.err
    assert {s["user_agent"] for s in listed.json()} == {"Laptop/1.0", "Phone/2.0"}
    assert all(s["user"] == "bob" and s["ended_at"] is None for s in listed.json())
    text = run("sessions", "list", "--user", "bob").out
    assert "Laptop/1.0" in text and "10.0.0.6" in text

    ended = run("sessions", "end", str(laptop.id), "--json")
    assert ended.code == 0, ended.err
    assert ended.json()["ended_at"] is not None and ended.json()["end_reason"] == "admin"
    assert [s["id"] for s in run("sessions", "list", "--user", "bob", "--json").json()] == [
        str(phone.id)
    ]
    everything = run("sessions", "list", "--user", "bob", "--include-ended", "--json").json()
    assert len(everything) == 2

    all_of_them = run("sessions", "end", "--user", "bob")
    assert all_of_them.code == 0 and "Ended 1 session(s) of bob" in all_of_them.out
    assert run("sessions", "list", "--user", "bob").out.strip() == "No sessions."
    db.rollback()
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "session.end")).all()
    assert len(events) == 2

    missing = run("sessions", "end", "00000000-0000-0000-0000-000000000000")
    assert missing.code == 1 and "No such session" in missing.err
    assert run("sessions", "end").code == 2  # an id or --user
    assert run("sessions", "end", str(phone.id), "--user", "bob").code == 2
    assert run("sessions", "list", "--user", "nobody").code == 1
