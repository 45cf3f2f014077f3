"""Organizations as a removed member and an ambitious one try them, through the HTTP app on
SQLite and PostgreSQL: access ends at the next /token request, invitations are spent once
and by their invitee only, no one raises their own role, the last owner stays."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.registry import tokens
from tests.factories import PASSWORD, api_token, auth, make_account, make_org
from tests.search.helpers import make_repo

SERVICE = "store-registry"
SCOPE = "repository:acme/secret-app:pull,push"


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def _actions(client: TestClient, **request: Any) -> list[str]:
    if "refresh" in request:
        answer = client.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": request["refresh"],
                "service": SERVICE,
                "scope": SCOPE,
            },
        )
    else:
        answer = client.get(
            "/token", params={"service": SERVICE, "scope": SCOPE}, headers=request["headers"]
        )
    if answer.status_code == 401:  # the registry's DENIED: no access to the repository
        assert "no_access" in answer.text, answer.text
        return ["refused"]
    assert answer.status_code == 200, answer.text
    access = tokens.decode_unverified(answer.json()["token"])[1]["access"]
    return sorted(a for entry in access for a in entry["actions"])


def test_a_removed_member_loses_everything_at_the_next_request(
    client: TestClient, session: Session
) -> None:
    alice, bob, carol = (make_account(session, n) for n in ("alice", "bob", "carol"))
    make_org(session, alice, "acme")
    make_repo(session, "acme/secret-app", description="Quarterly zorblax", private=True)
    owner, bobs, carols = (auth(api_token(session, a)) for a in (alice, bob, carol))
    pat = api_token(session, bob, ("pull", "push"))
    session.commit()

    invited = client.post(
        "/api/v1/orgs/acme/invitations", json={"username": "bob", "role": "editor"}, headers=owner
    )
    assert invited.status_code == 201, invited.text
    invitation = invited.json()["id"]
    # Someone else cannot accept (or even see) bob's invitation.
    taken = client.post(f"/api/v1/me/invitations/{invitation}/accept", headers=carols)
    assert taken.status_code == 404
    accepted = client.post(f"/api/v1/me/invitations/{invitation}/accept", headers=bobs)
    assert accepted.status_code == 200, accepted.text
    login = client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "bob",
            "password": PASSWORD,
            "service": SERVICE,
            "access_type": "offline",
            "scope": SCOPE,
        },
    )
    refresh = login.json()["refresh_token"]

    assert _actions(client, headers=_basic("bob", pat)) == ["pull", "push"]
    assert _actions(client, refresh=refresh) == ["pull", "push"]
    assert _actions(client, headers=_basic("bob", PASSWORD)) == ["pull", "push"]
    found = client.get("/api/v1/search", params={"q": "zorblax"}, headers=bobs).json()
    assert [r["name"] for r in found["results"]] == ["acme/secret-app"]
    # An editor cannot make themselves (or anyone) an owner.
    raised = client.put("/api/v1/orgs/acme/members/bob", json={"role": "owner"}, headers=bobs)
    assert raised.status_code == 403

    removed = client.delete("/api/v1/orgs/acme/members/bob", headers=owner)
    assert removed.status_code == 204, removed.text

    for request in ({"headers": _basic("bob", pat)}, {"refresh": refresh}):
        assert _actions(client, **request) == ["refused"]
    assert _actions(client, headers=_basic("bob", PASSWORD)) == ["refused"]
    after = client.get("/api/v1/search", params={"q": "zorblax"}, headers=bobs).json()
    assert after["total"] == 0 and after["results"] == [] and after["did_you_mean"] is None
    assert client.get("/api/v1/repositories/acme/secret-app", headers=bobs).status_code == 404
    assert client.get("/r/acme/secret-app", headers=bobs).status_code == 404
    # The invitation is spent: accepting it again does not bring bob back.
    again = client.post(f"/api/v1/me/invitations/{invitation}/accept", headers=bobs)
    assert again.status_code == 409
    assert _actions(client, headers=_basic("bob", pat)) == ["refused"]
    assert client.get("/api/v1/orgs/acme/members", headers=bobs).status_code == 403


def test_the_last_owner_can_neither_leave_nor_step_down(
    client: TestClient, session: Session
) -> None:
    alice = make_account(session, "alice")
    make_org(session, alice, "acme")
    owner = auth(api_token(session, alice))
    session.commit()
    left = client.delete("/api/v1/orgs/acme/members/alice", headers=owner)
    assert left.status_code == 409
    down = client.put("/api/v1/orgs/acme/members/alice", json={"role": "viewer"}, headers=owner)
    assert down.status_code == 409
    members = client.get("/api/v1/orgs/acme/members", headers=owner).json()
    assert [(m["username"], m["role"]) for m in members] == [("alice", "owner")]
    assert accounts.get_organization(session, "acme") is not None


def test_an_invitation_dies_with_its_inviters_ownership(
    client: TestClient, session: Session
) -> None:
    """An owner about to be removed invites an account of their own as owner: once they are
    no longer an owner, the invitation brings no one in."""
    alice, mallory, sock, vic = (
        make_account(session, n) for n in ("alice", "mallory", "sock", "vic")
    )
    make_org(session, alice, "acme")
    owner, mallorys, socks, vics = (
        auth(api_token(session, a)) for a in (alice, mallory, sock, vic)
    )
    session.commit()
    invited = client.post(
        "/api/v1/orgs/acme/invitations",
        json={"username": "mallory", "role": "owner"},
        headers=owner,
    )
    accepted = client.post(
        f"/api/v1/me/invitations/{invited.json()['id']}/accept", headers=mallorys
    )
    assert accepted.status_code == 200, accepted.text
    planted = {}
    for who in ("sock", "vic"):
        made = client.post(
            "/api/v1/orgs/acme/invitations",
            json={"username": who, "role": "owner"},
            headers=mallorys,
        )
        assert made.status_code == 201, made.text
        planted[who] = made.json()["id"]

    # mallory is removed: sock's invitation no longer makes an owner
    assert client.delete("/api/v1/orgs/acme/members/mallory", headers=owner).status_code == 204
    late = client.post(f"/api/v1/me/invitations/{planted['sock']}/accept", headers=socks)
    assert late.status_code == 409, late.text
    assert client.get("/api/v1/orgs/acme/members", headers=socks).status_code == 403
    # an owner inviting vic again makes the invitation theirs: it works
    again = client.post(
        "/api/v1/orgs/acme/invitations", json={"username": "vic", "role": "viewer"}, headers=owner
    )
    assert again.status_code == 201 and again.json()["id"] == planted["vic"]
    joined = client.post(f"/api/v1/me/invitations/{planted['vic']}/accept", headers=vics)
    assert joined.status_code == 200, joined.text
    members = client.get("/api/v1/orgs/acme/members", headers=owner).json()
    assert sorted((m["username"], m["role"]) for m in members) == [
        ("alice", "owner"),
        ("vic", "viewer"),
    ]
