"""Whoever may not see a private repository cannot tell it from one that does not exist: every
route that names a repository answers both alike (status and body, the name aside), for an
outsider and for an anonymous caller, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from tests.factories import auth, make_account, make_org
from tests.search.helpers import make_repo

RULES = [{"ref_kind": "branch", "pattern": "main", "docker_tag": "latest"}]
BUILD = str(uuid.uuid4())
GITHUB = {"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Delivery": "d1"}
GITLAB = {"X-Gitlab-Token": "guess", "X-Gitlab-Event-UUID": "d2"}
STALE = {
    "X-Store-Signature": "sha256=" + "0" * 64,
    "X-Store-Timestamp": "1",
    "X-Store-Delivery": "d3",
}


def _token(session: Session, account: Any) -> str:
    return accounts.create_token(
        session, kind="personal", name="t", scopes=["api", "pull", "push"], created_by=account
    ).secret


def _answers(client: TestClient, name: str, headers: dict[str, str]) -> list[tuple[str, int, str]]:
    repo = name.split("/")[1]
    api = f"/api/v1/repositories/{name}"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", api, {}),
        ("PATCH", api, {"json": {"description": "x"}}),
        ("PUT", f"{api}/star", {}),
        ("DELETE", f"{api}/star", {}),
        ("GET", f"{api}/collaborators", {}),
        ("PUT", f"{api}/collaborators/olga", {"json": {"permission": "read"}}),
        ("GET", f"{api}/visibility", {}),
        ("PUT", f"{api}/visibility", {"json": {"visibility": "public"}}),
        ("GET", f"{api}/build-source", {}),
        (
            "PUT",
            f"{api}/build-source",
            {"json": {"url": "https://g.example/x.git", "rules": RULES}},
        ),
        ("GET", f"{api}/builds", {}),
        ("POST", f"{api}/builds", {"json": {"ref": "refs/heads/main"}}),
        ("GET", f"{api}/builds/{BUILD}", {}),
        ("GET", f"{api}/builds/{BUILD}/log", {}),
        ("POST", f"{api}/builds/webhook", {"content": b"{}"}),
        ("POST", f"{api}/builds/webhook", {"content": b"{}", "headers": GITHUB}),
        ("POST", f"{api}/builds/webhook", {"content": b"{}", "headers": GITLAB}),
        ("POST", f"{api}/builds/webhook", {"content": b"{}", "headers": STALE}),
        ("GET", f"/v2/repositories/{name}", {}),
        ("GET", f"/v2/repositories/{name}/tags", {}),
        ("GET", f"/r/{name}", {}),
        ("GET", f"/r/{name}/builds", {}),
        ("GET", f"/r/{name}/settings", {}),
        ("GET", "/api/v1/registry/access", {"params": {"repository": name}}),
        (
            "GET",
            "/token",
            {"params": {"service": "store-registry", "scope": f"repository:{name}:pull"}},
        ),
    ]
    out = []
    for method, path, kw in calls:
        extra = kw.pop("headers", {})
        response = client.request(method, path, headers={**headers, **extra}, **kw)
        body = response.text.replace(name, "NAME").replace(repo, "REPO")
        out.append((f"{method} {path.replace(name, 'NAME')}", response.status_code, body))
    return out


def test_a_private_repository_answers_as_one_that_does_not_exist(
    client: TestClient, session: Session
) -> None:
    alice, bob, olga = (make_account(session, n) for n in ("alice", "bob", "olga"))
    make_org(session, alice, "acme")
    for name in ("acme/secret", "bob/secret"):
        make_repo(session, name, description="Private stuff", private=True, star_count=3)
    owner, bobs, outsider = (auth(_token(session, a)) for a in (alice, bob, olga))
    session.commit()
    for headers, name in ((owner, "acme/secret"), (bobs, "bob/secret")):
        made = client.put(
            f"/api/v1/repositories/{name}/build-source",
            json={"url": "https://g.example/x.git", "rules": RULES},
            headers=headers,
        )
        assert made.status_code == 200, made.text
        assert client.put(f"/api/v1/repositories/{name}/star", headers=headers).status_code == 200

    for ns in ("acme", "bob"):
        for caller in (outsider, {}):
            hidden = _answers(client, f"{ns}/secret", caller)
            missing = _answers(client, f"{ns}/nothing", caller)
            differ = [
                (h[0], h[1], m[1], h[2][:200], m[2][:200])
                for h, m in zip(hidden, missing, strict=True)
                if h != m
            ]
            assert differ == [], differ


def _product_answers(
    client: TestClient, name: str, headers: dict[str, str]
) -> list[tuple[str, int, str]]:
    slug = name.split("/")[1]
    api = f"/api/v1/products/{name}"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", api, {}),
        ("PATCH", api, {"json": {"title": "x"}}),
        ("DELETE", api, {}),
        ("POST", f"{api}/status", {"json": {"status": "published"}}),
        ("GET", f"{api}/tiers", {}),
        ("POST", f"{api}/tiers", {"json": {"slug": "t", "billing": "free"}}),
        ("PATCH", f"{api}/tiers/free", {"json": {"name": "x"}}),
        ("POST", f"{api}/tiers/free/get", {}),
        ("GET", f"{api}/entitlements", {}),
        ("GET", f"{api}/pulls", {}),
        ("GET", f"{api}/access", {}),
        ("GET", f"{api}/tags", {}),
        ("GET", f"{api}/signatures", {}),
        ("GET", f"{api}/certification", {}),
        ("GET", f"/products/{name}", {}),
        ("GET", "/api/v1/registry/access", {"params": {"repository": name}}),
        (
            "GET",
            "/token",
            {"params": {"service": "store-registry", "scope": f"repository:{name}:pull"}},
        ),
    ]
    out = []
    for method, path, kw in calls:
        response = client.request(method, path, headers=headers, **kw)
        body = response.text.replace(name, "NAME").replace(slug, "SLUG")
        out.append((f"{method} {path.replace(name, 'NAME')}", response.status_code, body))
    return out


def test_a_draft_product_answers_as_one_that_does_not_exist(
    client: TestClient, session: Session
) -> None:
    from tests.factories import make_product

    alice, olga = make_account(session, "alice"), make_account(session, "olga")
    acme = make_org(session, alice, "acme")
    make_product(session, acme, alice, "hushed", publish=False)
    outsider = auth(_token(session, olga))
    session.commit()
    for caller in (outsider, {}):
        hidden = _product_answers(client, "acme/hushed", caller)
        missing = _product_answers(client, "acme/nothing", caller)
        differ = [
            (h[0], h[1], m[1], h[2][:200], m[2][:200])
            for h, m in zip(hidden, missing, strict=True)
            if h != m
        ]
        assert differ == [], differ
