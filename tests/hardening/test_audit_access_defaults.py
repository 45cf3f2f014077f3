"""A namespace public by default does not give a paid product's images away, through the HTTP
app on SQLite and PostgreSQL: its plain repositories start public at their first push (or
creation), but a product's repository and sub-repositories start private, and only the
product's tiers (or an owner, explicitly) make them public."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.registry import repositories, tokens
from tests.factories import (
    api_token,
    auth,
    make_account,
    make_admin,
    make_org,
    make_product,
    paid_tier,
)

SERVICE = "store-registry"
MEDIA = "application/vnd.docker.distribution.events.v1+json"
# repository -> whether anyone may pull it after its first push
PUSHED = {
    "acme/app": False,  # the paid product's
    "acme/app/worker": False,  # and its sub-repository
    "acme/open": True,  # a free and public product's: public through its tiers
    "acme/tools": True,  # no product: the namespace's default
}


def _anonymous_pulls(client: TestClient, name: str) -> bool:
    answer = client.get("/token", params={"service": SERVICE, "scope": f"repository:{name}:pull"})
    if answer.status_code == 401:
        return False
    assert answer.status_code == 200, answer.text
    access = tokens.decode_unverified(answer.json()["token"])[1]["access"]
    return any("pull" in a["actions"] for a in access)


def _push(client: TestClient, app: FastAPI, name: str, n: int) -> None:
    event: dict[str, Any] = {
        "id": f"push-{n}",
        "timestamp": "2026-12-04T10:00:00.000000000Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 401,
            "digest": "sha256:" + "a" * 64,
            "repository": name,
            "tag": "v1",
        },
        "request": {"method": "PUT", "addr": "127.0.0.1:1", "useragent": "skopeo/1.9.3"},
        "actor": {"name": "owner"},
    }
    secret = app.state.settings.resolved_notify_secret
    answer = client.post(
        "/registry/events",
        content=json.dumps({"events": [event]}),
        headers={"Content-Type": MEDIA, "Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 200, answer.text


def _world(session: Session) -> dict[str, Any]:
    owner, editor = make_account(session, "owner"), make_account(session, "eddie")
    acme = make_org(session, owner, "acme")
    accounts.add_member(session, org=acme, actor=make_admin(session), account=editor, role="editor")
    make_product(session, acme, owner, "app", tiers=[paid_tier()])
    make_product(
        session, acme, owner, "open", tiers=[{"slug": "free", "billing": "free", "public": True}]
    )
    repositories.set_default_visibility(session, actor=owner, namespace="acme", visibility="public")
    world = {"owner": api_token(session, owner), "editor": api_token(session, editor)}
    session.commit()
    return world


def test_a_first_push_makes_only_plain_repositories_public(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    _world(session)
    for n, (name, public) in enumerate(PUSHED.items()):
        assert _anonymous_pulls(client, name) is (name == "acme/open"), name
        _push(client, app, name, n)
        assert _anonymous_pulls(client, name) is public, name


def test_created_before_its_first_push_likewise(client: TestClient, session: Session) -> None:
    world = _world(session)
    for name, public in PUSHED.items():
        answer = client.post(
            "/api/v1/repositories", json={"name": name}, headers=auth(world["editor"])
        )
        assert answer.status_code == 201, answer.text
        assert _anonymous_pulls(client, name) is public, name
    # An editor does not make a product's repository public; nor does an owner a paid
    # product's (its tiers decide who pulls it).
    asked = client.post(
        "/api/v1/repositories",
        json={"name": "acme/app/cli", "visibility": "public"},
        headers=auth(world["editor"]),
    )
    assert (asked.status_code, asked.json()["error"]) == (403, "visibility_denied")
    assert not _anonymous_pulls(client, "acme/app/cli")
    owned = client.post(
        "/api/v1/repositories",
        json={"name": "acme/app/cli", "visibility": "public"},
        headers=auth(world["owner"]),
    )
    assert (owned.status_code, owned.json()["error"]) == (409, "sold_product"), owned.text
    assert not _anonymous_pulls(client, "acme/app/cli")
