"""Personal namespaces in the one may-pull rule: the user of ``<username>/`` and the
collaborators of its repositories, with passwords and personal tokens (least privilege: a
token without push scope never pushes). The token endpoint, the JSON API's explanation and
search visibility agree, on SQLite and PostgreSQL.

The expectation is written here from the rule's statement, not computed by the code."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.errors import Forbidden, NotFound, ValidationFailed
from store.registry import hub, repositories, tokens
from store.search import service as search
from tests.factories import PASSWORD, make_account, make_admin, make_org

SERVICE = "store-registry"
REPOS = {"private": "alice/app", "sub": "alice/app/worker", "public": "alice/open"}
# principal -> account username, credential kind
PRINCIPALS = (
    "anonymous",
    "alice",  # the namespace's user, with her password
    "alice_push_token",  # her personal token with pull and push scopes
    "alice_pull_token",  # her personal token with pull only
    "alice_api_token",  # her personal token with api only: no registry access
    "reader",  # read collaborator on alice/app
    "writer",  # write collaborator on alice/app
    "admin_collab",  # admin collaborator on alice/app
    "bob",  # any other user
    "robot",  # a robot token (pull, push) of an organization
    "site_admin",
)


def expected(principal: str, kind: str) -> set[str]:
    """Actions granted on a repository of alice's namespace, from the rule's statement."""
    public = {"pull"} if kind == "public" else set()
    if principal == "alice_api_token":
        return set()  # the token has no registry scope at all
    if principal in ("alice", "alice_push_token"):
        return {"pull", "push", "delete"}
    if principal == "alice_pull_token":
        return {"pull"}
    if principal == "site_admin":
        return {"pull"}
    collaborator = {"reader": {"pull"}, "writer": {"pull", "push"}}
    collaborator["admin_collab"] = {"pull", "push", "delete"}
    if principal in collaborator and kind == "private":
        return collaborator[principal]  # a collaborator is given one repository, not its subs
    return public


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def _world(session: Session) -> dict[str, dict[str, str]]:
    alice = make_account(session, "alice")
    reader, writer = make_account(session, "reader"), make_account(session, "writer")
    admin_collab, bob = make_account(session, "admincollab"), make_account(session, "bob")
    site_admin = make_admin(session)
    for name in REPOS.values():
        hub.ensure_repository(session, name)
    repositories.set_collaborator(
        session, actor=alice, name="alice/app", username="reader", permission="read"
    )
    repositories.set_collaborator(
        session, actor=alice, name="alice/app", username="writer", permission="write"
    )
    repositories.set_collaborator(
        session, actor=alice, name="alice/app", username="admincollab", permission="admin"
    )
    hub.set_visibility(session, name="alice/open", visibility="public")
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    for key, account in (
        ("alice", alice),
        ("reader", reader),
        ("writer", writer),
        ("admin_collab", admin_collab),
        ("bob", bob),
        ("site_admin", site_admin),
    ):
        headers[key] = _basic(account.username, PASSWORD)
    for key, scopes in (
        ("alice_push_token", ["pull", "push"]),
        ("alice_pull_token", ["pull"]),
        ("alice_api_token", ["api"]),
    ):
        secret = accounts.create_token(
            session, kind="personal", name=key, scopes=scopes, created_by=alice
        ).secret
        headers[key] = _basic("alice", secret)
    acme = make_org(session, bob, "acme")
    robot = accounts.create_token(
        session, kind="robot", name="ci", scopes=["pull", "push"], created_by=bob, org=acme
    ).secret
    headers["robot"] = _basic("ci", robot)
    session.commit()
    return headers


def _granted(client: TestClient, headers: dict[str, str], repo: str) -> tuple[set[str], Any]:
    response = client.get(
        "/token",
        params={"service": SERVICE, "scope": f"repository:{repo}:pull,push,delete"},
        headers=headers,
    )
    if response.status_code == 401:
        return set(), response.json()["errors"][0]
    assert response.status_code == 200, response.text
    access = tokens.decode_unverified(response.json()["token"])[1]["access"]
    return {a for entry in access for a in entry["actions"]}, None


def test_token_endpoint_explanation_and_search_agree(client: TestClient, session: Session) -> None:
    headers = _world(session)
    for principal in PRINCIPALS:
        for kind, repo in REPOS.items():
            where = f"{principal} x {kind}"
            want = expected(principal, kind)
            got, error = _granted(client, headers[principal], repo)
            assert got == want, where
            if error is not None and "push" not in want and error["code"] == "DENIED":
                assert error["detail"], where
            if principal not in ("anonymous", "alice", "reader", "writer", "bob", "site_admin"):
                continue
            username = {"alice": "alice", "site_admin": "root-admin"}.get(principal, principal)
            account = (
                None
                if principal == "anonymous"
                else accounts.get_account_by_username(session, username)
            )
            # The JSON API's explanation: the same decision.
            auth: dict[str, str] = {}
            if account is not None:
                secret = accounts.create_token(
                    session, kind="personal", name="api", scopes=["api"], created_by=account
                ).secret
                session.commit()
                auth = {"Authorization": f"Bearer {secret}"}
            check = client.get(
                "/api/v1/registry/access",
                params={"scope": f"repository:{repo}:pull,push,delete"},
                headers=auth,
            )
            assert check.status_code == 200, check.text
            granted = {a for g in check.json()["granted"] for a in g["actions"]}
            assert granted == want, where
            # Search shows the repository exactly to those who may pull it.
            found = {
                h.doc.name
                for h in search.search(session, q=repo.split("/")[-1], account=account).hits
            }
            assert (repo in found) is ("pull" in want), where


def test_push_refusals_name_the_namespace(client: TestClient, session: Session) -> None:
    headers = _world(session)
    check = client.get(
        "/api/v1/registry/access",
        params={"scope": "repository:alice/open:pull,push"},
        headers=headers["bob"],
    )
    # Basic credentials are not an API token: anonymous explanation.
    assert check.status_code == 200
    bob = accounts.get_account_by_username(session, "bob")
    secret = accounts.create_token(
        session, kind="personal", name="api", scopes=["api"], created_by=bob
    ).secret
    session.commit()
    check = client.get(
        "/api/v1/registry/access",
        params={"scope": "repository:alice/open:pull,push"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    body = check.json()
    assert [g["actions"] for g in body["granted"]] == [["pull"]]
    assert body["refused"][0]["reason"] == "push_denied"
    assert body["refused"][0]["message"] == (
        "Only alice and the collaborators given write access push to alice/open."
    )


def test_collaborators_are_managed_by_the_owner_and_admins(session: Session) -> None:
    alice, bob = make_account(session, "alice"), make_account(session, "bob")
    carol = make_account(session, "carol")
    owner = make_account(session, "olaf")
    make_org(session, owner, "acme")
    with pytest.raises(ValidationFailed) as bad:
        repositories.set_collaborator(
            session, actor=alice, name="alice/app", username="bob", permission="root"
        )
    assert bad.value.code == "bad_permission"
    with pytest.raises(ValidationFailed) as bad:
        repositories.set_collaborator(
            session, actor=alice, name="alice/app", username="nobody", permission="read"
        )
    assert bad.value.code == "no_account"
    with pytest.raises(ValidationFailed) as bad:
        repositories.set_collaborator(
            session, actor=alice, name="alice/app", username="alice", permission="read"
        )
    assert bad.value.code == "owner_not_collaborator"
    with pytest.raises(ValidationFailed) as bad:
        repositories.set_collaborator(
            session, actor=owner, name="acme/app", username="bob", permission="read"
        )
    assert bad.value.code == "not_personal"
    # Someone without access to a private repository: it does not exist for them.
    with pytest.raises(NotFound):
        repositories.set_collaborator(
            session, actor=bob, name="alice/app", username="carol", permission="read"
        )
    repositories.set_collaborator(
        session, actor=alice, name="alice/app", username="bob", permission="write"
    )
    with pytest.raises(Forbidden):  # write is not admin
        repositories.set_collaborator(
            session, actor=bob, name="alice/app", username="carol", permission="read"
        )
    repositories.set_collaborator(
        session, actor=alice, name="alice/app", username="bob", permission="admin"
    )
    repositories.set_collaborator(
        session, actor=bob, name="alice/app", username="carol", permission="read"
    )
    listed = repositories.list_collaborators(session, actor=carol, name="alice/app")
    assert [(c.username, c.permission) for c in listed] == [("bob", "admin"), ("carol", "read")]
    repositories.remove_collaborator(session, actor=alice, name="alice/app", username="carol")
    with pytest.raises(NotFound):
        repositories.list_collaborators(session, actor=carol, name="alice/app")


def test_a_namespace_default_visibility_applies_to_new_repositories(session: Session) -> None:
    alice = make_account(session, "alice")
    assert hub.ensure_repository(session, "alice/first").visibility == "private"
    row = repositories.namespace_of(session, "alice/x")
    assert row is not None and row.account_id == alice.id
    row.default_visibility = "public"
    session.flush()
    repo = hub.ensure_repository(session, "alice/second")
    assert (repo.visibility, repo.private) == ("public", False)
    assert hub.ensure_repository(session, "alice/first").visibility == "private"
