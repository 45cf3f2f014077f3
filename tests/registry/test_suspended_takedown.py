"""Suspending a product takes its images down: its repositories stop being pullable by
anyone outside the publisher (and administrators), even those its owner had marked public,
in the token endpoint, the JSON API's explanation and search alike; reinstating it brings
the marked visibility back. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.registry import hub, tokens
from store.search import service as search
from tests.factories import make_account, make_admin, make_org, make_product

SERVICE = "store-registry"
REPOS = ("acme/app", "acme/app/worker")


def _pull(client: TestClient, headers: dict[str, str], repo: str) -> bool:
    response = client.get(
        "/token", params={"service": SERVICE, "scope": f"repository:{repo}:pull"}, headers=headers
    )
    if response.status_code != 200:
        assert response.status_code == 401, response.text
        return False
    access = tokens.decode_unverified(response.json()["token"])[1]["access"]
    return any("pull" in a["actions"] for a in access)


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_a_suspended_products_marked_public_repositories_are_taken_down(
    client: TestClient, session: Session
) -> None:
    owner = make_account(session, "owner1")
    stranger = make_account(session, "stranger1")
    admin = make_admin(session)
    acme = make_org(session, owner, "acme")
    product = make_product(session, acme, owner, "app")  # one free tier, published
    for name in REPOS:
        hub.ensure_repository(session, name)
        hub.set_visibility(session, name=name, visibility="public")
    headers = {"anonymous": {}}
    for who, account in (("owner", owner), ("stranger", stranger), ("admin", admin)):
        secret = accounts.create_token(
            session, kind="personal", name="t", scopes=["api", "pull"], created_by=account
        ).secret
        headers[who] = _basic(account.username, secret)
    session.commit()

    def seen_by_anyone(repo: str) -> bool:
        hits = search.search(session, q=repo.split("/")[-1], account=None).hits
        return repo in {h.doc.name for h in hits}

    for repo in REPOS:
        assert _pull(client, headers["anonymous"], repo), repo
        assert _pull(client, headers["stranger"], repo), repo

    catalog.set_status(
        session, actor=admin, product=product, status="suspended", reason="malware reported"
    )
    session.commit()
    for repo in REPOS:
        assert not _pull(client, headers["anonymous"], repo), repo
        assert not _pull(client, headers["stranger"], repo), repo
        assert _pull(client, headers["owner"], repo), repo
        assert _pull(client, headers["admin"], repo), repo
        check = client.get("/api/v1/registry/access", params={"repository": repo})
        assert check.status_code == 200, check.text
        assert not check.json()["granted"], repo
        session.expire_all()
        assert not seen_by_anyone(repo), repo

    catalog.set_status(session, actor=admin, product=product, status="published")
    session.commit()
    for repo in REPOS:
        assert _pull(client, headers["anonymous"], repo), repo
        session.expire_all()
        assert seen_by_anyone(repo), repo
