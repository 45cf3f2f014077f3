"""Who may make a repository public, through the HTTP app on SQLite and PostgreSQL: creating a
repository (before its first push) is for whoever may push to the namespace, but making it
public is for those who may change a repository's visibility (the namespace's owners). An
editor asks for a public repository (a paid product's, one of its sub-repositories, any
other) and anonymous pulls are checked against the rule after each attempt."""

from __future__ import annotations

import pytest
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
NAMES = ("acme/app", "acme/app/worker", "acme/tools")  # a paid product's, its sub, another


def _anonymous_pulls(client: TestClient, name: str) -> bool:
    answer = client.get("/token", params={"service": SERVICE, "scope": f"repository:{name}:pull"})
    if answer.status_code == 401:
        return False
    assert answer.status_code == 200, answer.text
    access = tokens.decode_unverified(answer.json()["token"])[1]["access"]
    return any("pull" in a["actions"] for a in access)


@pytest.mark.parametrize("requested", [None, "private", "public"])
@pytest.mark.parametrize("default", ["private", "public"])
@pytest.mark.parametrize("role", ["viewer", "editor", "owner"])
def test_only_owners_create_public_repositories(
    client: TestClient, session: Session, role: str, default: str, requested: str | None
) -> None:
    owner, member = make_account(session, "owner"), make_account(session, "member")
    acme = make_org(session, owner, "acme")
    accounts.add_member(session, org=acme, actor=make_admin(session), account=member, role=role)
    make_product(session, acme, owner, "app", tiers=[paid_tier()])
    repositories.set_default_visibility(session, actor=owner, namespace="acme", visibility=default)
    token = api_token(session, member)
    session.commit()
    for name in NAMES:
        assert not _anonymous_pulls(client, name)
        body = {"name": name} if requested is None else {"name": name, "visibility": requested}
        answer = client.post("/api/v1/repositories", json=body, headers=auth(token))
        # A product's repositories start private whatever the namespace's default.
        starts = "private" if name.startswith("acme/app") else default
        effective = requested or starts
        may_create = role in ("editor", "owner")
        refused = effective == "public" and starts == "private" and role != "owner"
        # A paid product's repositories are never marked public, not even by an owner.
        sold = effective == "public" and name.startswith("acme/app") and not refused
        where = f"{role} creating {name} {requested} (default {default})"
        created = may_create and not refused and not sold
        # Anyone pulls it exactly when the namespace's owners wanted it public.
        assert _anonymous_pulls(client, name) is (created and effective == "public"), where
        if not may_create:
            assert answer.status_code == 403, where
        elif refused:
            assert answer.status_code == 403, where
            assert answer.json()["error"] == "visibility_denied", where
            assert answer.json()["field"] == "visibility"
        elif sold:
            assert answer.status_code == 409, where
            assert answer.json()["error"] == "sold_product", where
            assert answer.json()["field"] == "visibility"
        else:
            assert answer.status_code == 201, f"{where}: {answer.text}"
