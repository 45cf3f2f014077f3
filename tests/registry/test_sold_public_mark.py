"""A repository's public mark never gives a paid product's images away: a repository (or a
sub-repository) marked public as a plain hub repository stops being pullable by outsiders
once a paid tier is offered on its product, in the token endpoint, the JSON API's
explanation, the visibility setting and search alike; the mark takes effect again when no
paid tier is active. Marking such a repository public is refused (409). On SQLite and
PostgreSQL."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.registry import hub, tokens
from store.search import service as search
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of

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


def _tokens(session: Session, account: object) -> tuple[dict[str, str], dict[str, str]]:
    secret = accounts.create_token(
        session, kind="personal", name="t", scopes=["api", "pull"], created_by=account
    ).secret  # type: ignore[arg-type]
    name = account.username  # type: ignore[attr-defined]
    basic = base64.b64encode(f"{name}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {basic}"}, {"Authorization": f"Bearer {secret}"}


def _seen_by_anyone(session: Session, repo: str) -> bool:
    session.expire_all()
    hits = search.search(session, q=repo.split("/")[-1], account=None).hits
    return repo in {h.doc.name for h in hits}


@pytest.mark.parametrize("marked", ["before_product", "before_paid_tier"])
def test_a_paid_tier_closes_repositories_marked_public(
    client: TestClient, session: Session, marked: str
) -> None:
    owner = make_account(session, "owner1")
    stranger = make_account(session, "stranger1")
    acme = make_org(session, owner, "acme")
    if marked == "before_product":
        # Plain hub repositories marked public, then a product created on the name.
        for name in REPOS:
            hub.set_visibility(session, name=name, visibility="public")
        product = make_product(
            session, acme, owner, "app", tiers=[{"slug": "trial", "billing": "free"}]
        )
    else:
        product = make_product(
            session, acme, owner, "app", tiers=[{"slug": "trial", "billing": "free"}]
        )
        for name in REPOS:
            hub.set_visibility(session, name=name, visibility="public")
    owner_basic, owner_bearer = _tokens(session, owner)
    stranger_basic, _ = _tokens(session, stranger)
    session.commit()
    for repo in REPOS:
        assert _pull(client, {}, repo), repo
        assert _pull(client, stranger_basic, repo), repo
    assert _seen_by_anyone(session, "acme/app/worker")

    catalog.create_tier(session, actor=owner, product=product, slug="pro", **_paid())
    session.commit()
    for repo in REPOS:
        assert not _pull(client, {}, repo), repo
        assert not _pull(client, stranger_basic, repo), repo
        assert _pull(client, owner_basic, repo), repo
        check = client.get("/api/v1/registry/access", params={"repository": repo})
        assert check.status_code == 200 and not check.json()["granted"], repo
        seen = client.get(f"/api/v1/repositories/{repo}/visibility", headers=owner_bearer)
        body = seen.json()
        assert (body["visibility"], body["public"]) == ("public", False), body
        assert "paid tier" in body["note"], body
        assert hub.get_repository(session, repo).private  # type: ignore[union-attr]
    assert not _seen_by_anyone(session, "acme/app/worker")

    # No paid tier active any more: the mark opens them again.
    catalog.update_tier(session, actor=owner, tier=tier_of(product, "pro"), active=False)
    session.commit()
    for repo in REPOS:
        assert _pull(client, {}, repo), repo
        session.expire_all()
        assert not hub.get_repository(session, repo).private  # type: ignore[union-attr]
    assert _seen_by_anyone(session, "acme/app/worker")


def _paid() -> dict[str, object]:
    tier = paid_tier()
    del tier["slug"]
    return tier


def test_a_draft_with_a_paid_tier_is_not_opened_by_an_old_mark(
    client: TestClient, session: Session
) -> None:
    owner = make_account(session, "owner1")
    acme = make_org(session, owner, "acme")
    hub.set_visibility(session, name="acme/app/worker", visibility="public")
    make_product(session, acme, owner, "app", publish=False, tiers=[paid_tier()])
    session.commit()
    assert not _pull(client, {}, "acme/app/worker")
    assert not _seen_by_anyone(session, "acme/app/worker")


def test_marking_a_paid_products_repository_public_is_refused(
    client: TestClient, session: Session
) -> None:
    owner = make_account(session, "owner1")
    acme = make_org(session, owner, "acme")
    make_product(session, acme, owner, "app", tiers=[paid_tier()])
    make_product(session, acme, owner, "free", tiers=[{"slug": "free", "billing": "free"}])
    _, bearer = _tokens(session, owner)
    session.commit()
    for repo in REPOS:
        url = f"/api/v1/repositories/{repo}/visibility"
        refused = client.put(url, json={"visibility": "public"}, headers=bearer)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "sold_product"
        assert "paid tier" in refused.json()["detail"]
        assert client.put(url, json={"visibility": "private"}, headers=bearer).status_code == 200
        assert not _pull(client, {}, repo)
    # Creating one public, or changing it through the repository's settings: the same.
    created = client.post(
        "/api/v1/repositories",
        json={"name": "acme/app/cli", "visibility": "public"},
        headers=bearer,
    )
    assert (created.status_code, created.json()["error"]) == (409, "sold_product"), created.text
    patched = client.patch(
        "/api/v1/repositories/acme/app", json={"visibility": "public"}, headers=bearer
    )
    assert (patched.status_code, patched.json()["error"]) == (409, "sold_product"), patched.text
    assert not _pull(client, {}, "acme/app")
    # A product with free tiers only may still be marked public.
    url = "/api/v1/repositories/acme/free/worker/visibility"
    opened = client.put(url, json={"visibility": "public"}, headers=bearer)
    assert opened.status_code == 200 and opened.json()["public"] is True
    assert _pull(client, {}, "acme/free/worker")


def test_the_organization_page_offers_no_public_mark_for_a_sold_product(
    client: TestClient, session: Session
) -> None:
    from store.registry import visibility
    from tests.web.helpers import HTML, login

    owner = make_account(session, "owner1")
    acme = make_org(session, owner, "acme")
    make_product(session, acme, owner, "app", tiers=[paid_tier()])
    make_product(session, acme, owner, "free", tiers=[{"slug": "free", "billing": "free"}])
    hub.set_visibility(session, name="acme/app/worker", visibility="public")  # an old mark
    hub.set_visibility(session, name="acme/app", visibility="private")
    hub.set_visibility(session, name="acme/free", visibility="private")
    session.commit()
    views = {v.repository: v for v in visibility.list_repositories(session, org=acme)}
    assert not views["acme/app"].may_mark_public
    assert views["acme/free"].may_mark_public
    client.headers.update(HTML)
    login(client, "owner1")
    page = client.get("/publish/acme").text
    rows = {row.split("</code>", 1)[0]: row for row in page.split("<td><code>")[1:]}
    assert "Make public" not in rows["acme/app"]
    assert "Sold through a paid tier" in rows["acme/app"]
    assert "Make private" in rows["acme/app/worker"]  # an old mark can still be taken off
    assert "Make public" in rows["acme/free"]
