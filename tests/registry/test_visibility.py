"""The per-repository visibility setting: API, CLI service, and what it changes."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.registry import hub
from tests.factories import PASSWORD, make_account, make_admin, make_org


def _bearer(session: Session, account: object) -> dict[str, str]:
    secret = accounts.create_token(
        session, kind="personal", name="api", scopes=["api"], created_by=account
    ).secret  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {secret}"}


def _anonymous_pull(client: TestClient, repo: str) -> int:
    response = client.get(
        "/token", params={"service": "store-registry", "scope": f"repository:{repo}:pull"}
    )
    return response.status_code


def test_owner_marks_a_repository_public_and_back(client: TestClient, session: Session) -> None:
    alice = make_account(session, "alice")
    viewer = make_account(session, "vera")
    outsider = make_account(session, "olga")
    acme = make_org(session, alice, "acme")
    accounts.add_member(session, org=acme, actor=make_admin(session), account=viewer, role="viewer")
    owner_h, viewer_h, outsider_h = (_bearer(session, a) for a in (alice, viewer, outsider))
    session.commit()

    url = "/api/v1/repositories/acme/tools/visibility"
    assert _anonymous_pull(client, "acme/tools") == 401  # private by default, before any push
    got = client.get(url, headers=viewer_h)
    assert got.status_code == 200
    assert got.json() == {
        "repository": "acme/tools",
        "visibility": "private",
        "public": False,
        "product": None,
        "note": "",
    }
    # Outsiders and anonymous callers: as if it did not exist.
    assert client.get(url, headers=outsider_h).status_code == 404
    assert client.get(url).status_code == 404
    assert client.put(url, json={"visibility": "public"}, headers=outsider_h).status_code == 404
    assert client.put(url, json={"visibility": "public"}, headers=viewer_h).status_code == 403
    bad = client.put(url, json={"visibility": "everyone"}, headers=owner_h)
    assert (bad.status_code, bad.json()["error"]) == (422, "bad_visibility")

    done = client.put(url, json={"visibility": "public"}, headers=owner_h)
    assert done.status_code == 200 and done.json()["public"] is True
    assert _anonymous_pull(client, "acme/tools") == 200
    repo = hub.get_repository(session, "acme/tools")
    assert repo is not None and (repo.visibility, repo.private) == ("public", False)

    back = client.put(url, json={"visibility": "private"}, headers=owner_h)
    assert back.status_code == 200 and back.json()["public"] is False
    assert _anonymous_pull(client, "acme/tools") == 401


def test_malformed_names_are_refused(client: TestClient, session: Session) -> None:
    alice = make_account(session, "alice")
    make_org(session, alice, "acme")
    headers = _bearer(session, alice)
    session.commit()
    for name in ("acme", "acme/x..y", "acme/-x"):
        response = client.put(
            f"/api/v1/repositories/{name}/visibility",
            json={"visibility": "public"},
            headers=headers,
        )
        assert response.status_code == 422, (name, response.text)


def test_password_basic_is_not_enough_for_the_api(client: TestClient, session: Session) -> None:
    make_org(session, make_account(session, "alice"), "acme")
    session.commit()
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    response = client.put(
        "/api/v1/repositories/acme/tools/visibility",
        json={"visibility": "public"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 401
