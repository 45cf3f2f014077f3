"""Notices to publishers and organizations, through the JSON API: invitations, publisher
verification and certification decisions; each once per cause, respecting preferences."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.mail import service as mail_service
from store.mail.models import OutboxMessage
from store.signing.models import CertificationRequest
from tests.factories import api_token, auth, make_account, make_admin, make_org, make_product


def _messages(session: Session, template: str) -> list[OutboxMessage]:
    session.expire_all()
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == template)
            .order_by(OutboxMessage.created_at)
        )
    )


def test_an_invitation_is_mailed_once_per_role(client: TestClient, session: Session) -> None:
    owner = make_account(session, "inviter", display_name="Ina Viter")
    make_org(session, owner, "guild", name="The Guild")
    make_account(session, "invitee")
    token = api_token(session, owner)
    session.commit()
    for role in ("editor", "editor", "viewer"):
        r = client.post(
            "/api/v1/orgs/guild/invitations",
            json={"username": "invitee", "role": role},
            headers=auth(token),
        )
        assert r.status_code == 201, r.text
    first, second = _messages(session, "invitation")
    assert first.to_addr == "invitee@example.com"
    assert first.subject == "Ina Viter invites you to The Guild"
    assert "as editor" in first.text_body and "as viewer" in second.text_body
    assert "/my/content" in first.html_body


def test_verification_decisions_reach_the_owners(client: TestClient, session: Session) -> None:
    owner = make_account(session, "veri-owner")
    co_owner = make_account(session, "veri-coowner")
    org = make_org(session, owner, "veri-co", name="Veri Co")
    admin = make_admin(session, "veri-admin")
    accounts.add_member(session, org=org, actor=admin, account=co_owner, role="owner")
    mail_service.set_preferences(session, account=co_owner, wanted={"sales"})  # no reviews
    token = api_token(session, admin)
    session.commit()
    r = client.post(
        "/api/v1/admin/orgs/veri-co/verification",
        json={"verified": True, "note": "Checked the company register"},
        headers=auth(token),
    )
    assert r.status_code == 200, r.text
    [verified] = _messages(session, "publisher_verified")
    assert verified.to_addr == "veri-owner@example.com" and verified.category == "reviews"
    assert "Checked the company register" in verified.text_body
    assert "List-Unsubscribe" in verified.headers


def test_a_certification_decision_is_mailed_once(client: TestClient, session: Session) -> None:
    owner = make_account(session, "cert-owner")
    org = make_org(session, owner, "cert-co")
    product = make_product(session, org, owner, "gizmo", title="Gizmo")
    request = CertificationRequest(product_id=product.id, tag="1.0", digest="sha256:" + "a" * 64)
    session.add(request)
    token = api_token(session, make_admin(session, "cert-admin"))
    session.commit()
    url = f"/api/v1/admin/certification/{request.id}/reject"
    r = client.post(url, json={"note": "Sign it with a registered key"}, headers=auth(token))
    assert r.status_code == 200, r.text
    again = client.post(url, json={"note": "again"}, headers=auth(token))
    assert again.status_code == 409
    [decided] = _messages(session, "certification_decided")
    assert decided.to_addr == "cert-owner@example.com"
    assert decided.subject == "Certification of Gizmo 1.0: rejected"
    assert "Sign it with a registered key" in decided.text_body
