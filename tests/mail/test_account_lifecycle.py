"""Change of address, account deletion and the data export; the gates on an unconfirmed
address. Mail is read from a real SMTP server."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from store.accounts import service as accounts
from store.accounts.models import (
    AccessToken,
    Account,
    AccountToken,
    Namespace,
    Organization,
    WebSession,
)
from store.catalog import service as catalog
from store.config import Settings
from store.db import utcnow
from store.errors import Conflict, Forbidden
from store.licensing import entitlements
from store.licensing.models import Entitlement
from store.mail.models import OutboxMessage
from store.privacy import lifecycle
from store.registry import hub, repositories
from store.registry.models import RepositoryCollaborator
from tests.factories import (
    PASSWORD,
    api_token,
    auth,
    make_account,
    make_org,
    make_product,
    tier_of,
)
from tests.mail.smtp_sink import SmtpSink
from tests.mail.test_account_links import _deliver, _link
from tests.web.helpers import HTML, csrf_of, login, submit


def _outbox(session: Session, template: str) -> list[OutboxMessage]:
    session.expire_all()
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.template == template)))


def test_a_new_address_takes_effect_only_when_its_link_is_opened(
    client: TestClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    smtp: SmtpSink,
) -> None:
    account = make_account(session, "mover")
    make_account(session, "holder", email="taken@example.com")
    session.commit()
    login(client, "mover")

    wrong = submit(
        client,
        "/my/account",
        "/my/account/email",
        {"new_email": "moved@example.com", "current_password": "not the password"},
    )
    assert wrong.status_code == 422 and "current password is not correct" in wrong.text
    taken = submit(
        client,
        "/my/account",
        "/my/account/email",
        {"new_email": "taken@example.com", "current_password": PASSWORD},
    )
    # A conflict, as the API and the sign-up form answer it; shown beside the new address.
    assert taken.status_code == 409 and "An account with this e-mail address exists" in taken.text
    assert 'id="email-new_email-error"' in taken.text
    assert not _outbox(session, "email_change")

    asked = submit(
        client,
        "/my/account",
        "/my/account/email",
        {"new_email": "Moved@Example.com", "current_password": PASSWORD},
        headers=HTML,
    )
    assert asked.status_code == 200 and "on its way to moved@example.com" in asked.text
    session.expire_all()
    assert session.get(Account, account.id).email == "mover@example.com"  # type: ignore[union-attr]
    _deliver(session_factory, settings, smtp)
    got = smtp.wait_for(2)
    by_to = {m["To"]: m for m in got}
    assert set(by_to) == {"moved@example.com", "mover@example.com"}
    assert "Confirm your new e-mail" in by_to["moved@example.com"]["Subject"]
    old_notice = by_to["mover@example.com"].get_body(preferencelist=("plain",))
    assert old_notice is not None and "moved@example.com" in old_notice.get_content()
    assert by_to["mover@example.com"].get_body(preferencelist=("html",)) is not None
    index = [m["To"] for m in got].index("moved@example.com") + 1
    path = _link(smtp, index, "/confirm-email")

    page = client.get(path, headers=HTML)
    assert page.status_code == 200 and "moved@example.com" in page.text
    session.expire_all()
    assert session.get(Account, account.id).email == "mover@example.com"  # type: ignore[union-attr]
    done = client.post(path, data={"csrf_token": csrf_of(page.text)}, headers=HTML)
    assert done.status_code == 200 and "Your address is now moved@example.com" in done.text
    session.expire_all()
    moved = session.get(Account, account.id)
    assert moved is not None and moved.email == "moved@example.com"
    assert moved.email_verified_at is not None
    again = client.post(path, data={"csrf_token": csrf_of(page.text)}, headers=HTML)
    assert again.status_code == 400 and "not valid" in again.text
    # The old address is told the change was made.
    _deliver(session_factory, settings, smtp)
    last = smtp.wait_for(3)[2]
    assert last["To"] == "mover@example.com" and "was changed" in last["Subject"]

    # An expired link changes nothing.
    session.execute(update(AccountToken).values(used_at=None))  # would be reusable if fresh
    session.execute(update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    assert client.post(path, data={"csrf_token": csrf_of(page.text)}).status_code == 400


def test_change_of_address_and_export_through_the_api(client: TestClient, session: Session) -> None:
    account = make_account(session, "apimover")
    token = api_token(session, account)
    session.commit()
    refused = client.post(
        "/api/v1/me/email",
        json={"email": "apimover@example.com", "password": PASSWORD},
        headers=auth(token),
    )
    assert refused.status_code == 422 and refused.json()["error"] == "same_email"
    assert refused.json()["field"] == "email"
    r = client.post(
        "/api/v1/me/email",
        json={"email": "api-moved@example.com", "password": PASSWORD},
        headers=auth(token),
    )
    assert r.status_code == 202 and r.json()["pending_email"] == "api-moved@example.com"
    [message] = _outbox(session, "email_change")
    assert message.to_addr == "api-moved@example.com"
    match = re.search(r"/confirm-email/(\S+)", message.text_body)
    assert match
    bad = client.post("/api/v1/confirm-email", json={"token": "x" + match.group(1)})
    assert bad.status_code == 422 and bad.json()["error"] == "bad_link"
    r = client.post("/api/v1/confirm-email", json={"token": match.group(1)})
    assert r.status_code == 200 and r.json()["email"] == "api-moved@example.com"
    assert r.json()["email_verified_at"]
    # Only the hash of the secret is stored.
    hashes = session.scalars(select(AccountToken.token_hash)).all()
    assert match.group(1) not in hashes and all(len(h) == 64 for h in hashes)

    r = client.get("/api/v1/me/export", headers=auth(token))
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    data = r.json()
    assert data["format"] == "store-account-export/1"
    assert data["account"]["email"] == "api-moved@example.com"
    assert [t["name"] for t in data["tokens"]] == ["tests"]
    assert "token_hash" not in json.dumps(data)
    assert any(m["to"] == "api-moved@example.com" for m in data["mail"])
    assert client.get("/api/v1/me/export").status_code == 401


def test_export_from_account_settings(client: TestClient, session: Session) -> None:
    account = make_account(session, "exporter")
    publisher = make_account(session)
    org = make_org(session, publisher)
    product = make_product(session, org, publisher)
    entitlements.get_free_tier(session, account=account, tier=tier_of(product, "free"))
    session.commit()
    login(client, "exporter")
    page = client.get("/my/account", headers=HTML)
    assert 'href="/my/account/export"' in page.text
    r = client.get("/my/account/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert 'filename="exporter-export.json"' in r.headers["content-disposition"]
    data = r.json()
    assert data["account"]["username"] == "exporter"
    assert [e["product"] for e in data["entitlements"]] == [product.repository]
    assert data["sessions"] and data["sessions"][0]["ended_at"] is None
    assert set(data["notification_preferences"]) >= {"sales", "renewals"}


def test_deleting_an_account_erases_it_and_ends_every_credential(
    client: TestClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    smtp: SmtpSink,
) -> None:
    account = make_account(session, "leaver", display_name="Lea Ver")
    lone_id = make_org(session, account, "leaver-lab").id  # nothing but its owner: goes too
    publisher = make_account(session)
    org = make_org(session, publisher)
    accounts.add_member(
        session, org=org, actor=make_account(session, is_admin=True), account=account, role="owner"
    )
    product = make_product(session, org, publisher)
    held = entitlements.get_free_tier(session, account=account, tier=tier_of(product, "free"))
    token = api_token(session, account)
    # A robot token of the organization made with the account's token dies with it.
    robot = accounts.create_token(
        session,
        kind="robot",
        name="ci",
        scopes=["pull"],
        created_by=account,
        org=org,
        via=accounts.resolve_token(session, token),
    )
    hub.set_visibility(session, name="leaver/tool", visibility="public")
    friend = make_account(session)
    repositories.set_collaborator(
        session, actor=account, name="leaver/tool", username=friend.username, permission="read"
    )
    session.commit()
    login(client, "leaver")
    page = client.get("/my/account", headers=HTML)
    assert "Delete my account" in page.text

    wrong = submit(
        client,
        "/my/account",
        "/my/account/delete",
        {"confirm_username": "leaver", "current_password": "wrong password"},
    )
    assert wrong.status_code == 422 and "current password is not correct" in wrong.text
    unconfirmed = submit(
        client,
        "/my/account",
        "/my/account/delete",
        {"confirm_username": "someone", "current_password": PASSWORD},
    )
    assert unconfirmed.status_code == 422 and "Type your username" in unconfirmed.text
    session.expire_all()
    assert session.get(Account, account.id).deleted_at is None  # type: ignore[union-attr]

    done = submit(
        client,
        "/my/account",
        "/my/account/delete",
        {"confirm_username": "leaver", "current_password": PASSWORD},
        headers=HTML,
    )
    assert done.status_code == 200 and "Your account is deleted" in done.text
    assert client.get("/my/account", headers=HTML).url.path == "/login"
    session.expire_all()
    gone = session.get(Account, account.id)
    assert gone is not None and gone.deleted_at is not None and not gone.is_active
    assert gone.email.endswith("@deleted.invalid") and gone.display_name == "Deleted account"
    assert gone.totp_secret is None and gone.email_verified_at is None
    # The username stays reserved; the lone organization is gone with its name.
    assert session.get(Namespace, "leaver") is not None
    assert session.get(Organization, lone_id) is None
    assert session.get(Namespace, "leaver-lab") is None
    assert accounts.role_of(session, gone, org) is None
    tool = hub.get_repository(session, "leaver/tool")
    assert tool is not None and tool.visibility == "private"
    assert not session.scalars(select(RepositoryCollaborator)).all()
    revoked = session.get(Entitlement, held.id)
    assert revoked is not None and revoked.status == "revoked"
    assert accounts.resolve_token(session, token) is None
    assert all(
        t.revoked_at is not None
        for t in session.scalars(select(AccessToken).where(AccessToken.account_id == account.id))
    )
    assert not session.scalars(select(WebSession).where(WebSession.account_id == account.id)).all()
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 401
    assert accounts.resolve_token(session, robot.secret) is None
    # No way back in, by the old address or the username.
    assert accounts.find_account(session, "leaver@example.com") is None
    relogin = submit(client, "/login", "/login", {"login": "leaver", "password": PASSWORD})
    assert "Logged in as" not in relogin.text
    # A last message goes to the former address.
    _deliver(session_factory, settings, smtp)
    [last] = smtp.wait_for(1)
    assert last["To"] == "leaver@example.com" and "is deleted" in last["Subject"]
    [row] = _outbox(session, "account_deleted")
    assert row.account_id is None


def test_deletion_is_refused_while_the_account_owns_an_organization_in_use(
    client: TestClient, session: Session, settings: Settings
) -> None:
    owner = make_account(session, "keeper")
    org = make_org(session, owner, "keeper-co")
    make_product(session, org, owner)
    token = api_token(session, owner)
    session.commit()
    r = client.post("/api/v1/me/deletion", json={"password": PASSWORD}, headers=auth(token))
    assert r.status_code == 409 and r.json()["error"] == "account_not_deletable"
    assert r.json()["problems"] == [
        "You are the only owner of keeper-co: make another member an owner first"
    ]
    wrong = client.post("/api/v1/me/deletion", json={"password": "nope"}, headers=auth(token))
    assert wrong.status_code == 422 and wrong.json()["error"] == "wrong_password"
    assert wrong.json()["field"] == "password"
    session.expire_all()
    assert session.get(Account, owner.id).is_active  # type: ignore[union-attr]
    # The settings page says why, instead of offering the form.
    login(client, "keeper")
    page = client.get("/my/account", headers=HTML)
    assert "Not possible yet" in page.text and "Delete my account" not in page.text
    with pytest.raises(Conflict):
        lifecycle.delete_account(session, settings=settings, account=owner, password=PASSWORD)


def test_publishing_needs_a_confirmed_address(session: Session) -> None:
    fresh = make_account(session, "newcomer", email_verified=False)
    org = make_org(session, fresh)
    product = make_product(session, org, fresh, publish=False)
    with pytest.raises(Forbidden) as refused:
        catalog.set_status(session, actor=fresh, product=product, status="published")
    assert refused.value.code == "email_unverified" and "newcomer@example.com" in str(
        refused.value.detail
    )
    fresh.email_verified_at = utcnow()
    catalog.set_status(session, actor=fresh, product=product, status="published")
    assert product.status == "published"
