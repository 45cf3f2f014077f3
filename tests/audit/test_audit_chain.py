"""The audit log: appends chain, verification finds edited, removed and truncated rows, and
security-relevant services record their actions."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.audit import service as audit
from store.audit.models import AuditEvent
from store.catalog import service as catalog
from store.licensing import entitlements
from tests.factories import make_account, make_admin, make_org, make_product, tier_of


def _actions(session: Session) -> list[str]:
    return [e.action for e in reversed(audit.list_events(session, audit.AuditFilter()).items)]


def test_chain_verifies_and_links(session: Session) -> None:
    first = audit.record(session, action="test.one", details={"n": 1})
    second = audit.record(session, action="test.two", actor="someone", details={"n": 2})
    assert second.seq == first.seq + 1 and second.prev_hash == first.hash
    assert audit.compute_hash(second) == second.hash
    report = audit.verify_chain(session)
    assert report.ok and report.count == second.seq


def test_edited_row_is_detected(session: Session) -> None:
    events = [audit.record(session, action="test.x", details={"i": i}) for i in range(3)]
    target = events[1]
    session.execute(update(AuditEvent).where(AuditEvent.id == target.id).values(details={"i": 99}))
    session.expire_all()
    report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_seq == target.seq
    assert "modified" in report.reason


def test_removed_rows_are_detected(session: Session) -> None:
    events = [audit.record(session, action="test.x") for _ in range(3)]
    session.execute(delete(AuditEvent).where(AuditEvent.id == events[1].id))
    session.expire_all()
    report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_seq == events[1].seq
    session.execute(delete(AuditEvent).where(AuditEvent.seq >= events[1].seq))
    session.expire_all()
    report = audit.verify_chain(session)  # the tail is gone: the head still knows
    assert not report.ok and report.first_bad_seq == events[1].seq


def test_services_record_security_actions(session: Session) -> None:
    admin = make_admin(session)
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    product = make_product(session, acme, alice, "app")
    issued = accounts.create_token(
        session, kind="robot", name="ci", scopes=["push"], created_by=alice, org=acme
    )
    accounts.revoke_token(session, token=issued.token, actor=alice)
    accounts.request_verification(session, org=acme, actor=alice)
    accounts.set_verified(session, org=acme, actor=admin, verified=True, note="ok", settings=None)
    accounts.set_admin(session, account=alice, is_admin=True, actor=admin)
    grant = entitlements.grant(session, actor=alice, tier=tier_of(product, "free"), account=admin)
    entitlements.revoke(session, entitlement=grant, actor=alice, reason="test")
    catalog.set_badges(session, actor=admin, product=product, official=True)
    catalog.set_status(session, actor=admin, product=product, status="suspended", reason="x")
    audit.sign_in(session, account=alice, via="web")
    audit.sign_in_failed(session, account_id=None, via="api")
    actions = _actions(session)
    for expected in (
        "token.create",
        "token.revoke",
        "publisher.verification_request",
        "publisher.verify",
        "admin.set_admin",
        "entitlement.grant",
        "entitlement.revoke",
        "product.badges",
        "product.suspended",
        "auth.login",
        "auth.login_failed",
    ):
        assert expected in actions, expected
    org_events = audit.list_events(session, audit.AuditFilter(org_id=acme.id)).items
    assert {"token.create", "entitlement.grant", "publisher.verify"} <= {
        e.action for e in org_events
    }
    assert all(e.org_id == acme.id for e in org_events)
    tokens = audit.list_events(session, audit.AuditFilter(action="token.")).items
    assert {e.action for e in tokens} == {"token.create", "token.revoke"}
    failed = audit.list_events(session, audit.AuditFilter(action="auth.login_failed")).items
    assert failed[0].details == {"via": "api", "account": "unknown"}
    set_admin = session.scalar(select(AuditEvent).where(AuditEvent.action == "admin.set_admin"))
    assert set_admin is not None and set_admin.actor == admin.username
    assert audit.verify_chain(session).ok


def test_failed_api_sign_in_is_recorded(client, session: Session) -> None:
    make_account(session, "alice")
    response = client.post("/api/v1/auth/token", json={"login": "alice", "password": "wrong!"})
    assert response.status_code == 401
    response = client.post(
        "/api/v1/auth/token", json={"login": "alice", "password": "correct horse battery"}
    )
    assert response.status_code == 201
    actions = _actions(session)
    assert actions[-3:] == ["auth.login_failed", "auth.login", "token.create"]


def test_failed_sign_ins_keep_only_the_account_id(client: TestClient, session: Session) -> None:
    """What was typed as the login never lands in the append-only log: an existing
    account's id, or nothing at all (a password typed into the name field)."""
    alice = make_account(session, "alice")
    session.commit()
    typed = "correct-horse-in-the-wrong-field"
    for login in ("alice", "ALICE", "alice@example.com", typed):
        response = client.post("/api/v1/auth/token", json={"login": login, "password": "x" * 12})
        assert response.status_code == 401
    session.expire_all()
    failed = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "auth.login_failed").order_by(AuditEvent.seq)
    ).all()
    assert [(e.target_type, e.target_id) for e in failed] == [("accounts", str(alice.id))] * 3 + [
        ("", "")
    ]
    for event in failed:
        text = f"{event.actor} {event.target_id} {event.details}".lower()
        assert typed not in text and "alice" not in text


def test_admin_api_changes_record_the_real_actor(client: TestClient, session: Session) -> None:
    from tests.factories import api_token, auth

    admin = make_admin(session, "chief")
    make_account(session, "target")
    token = api_token(session, admin)
    session.commit()
    for body in ({"is_active": False}, {"is_active": True}, {"is_admin": True}):
        r = client.patch("/api/v1/admin/accounts/target", json=body, headers=auth(token))
        assert r.status_code == 200, r.text
    session.expire_all()
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action.in_(("admin.set_active", "admin.set_admin")))
    ).all()
    assert len(events) == 3
    assert {(e.actor, e.actor_id) for e in events} == {("chief", admin.id)}
