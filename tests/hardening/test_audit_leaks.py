"""What someone not allowed to see a repository or a listing can learn of it through search
and the hub, right after it stops being visible to them (docs/security.md, "Audit")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.search import spelling
from tests.factories import make_account, make_org
from tests.search.helpers import make_repo


@pytest.fixture(autouse=True)
def _fresh_vocabulary() -> None:
    """The spelling vocabulary is cached per database until its number of documents changes;
    every test here starts from the same empty database, so one test's vocabulary would do
    for the next."""
    spelling._cache.clear()


def _bearer(session: Session, account: object) -> dict[str, str]:
    secret = accounts.create_token(
        session, kind="personal", name="api", scopes=["api"], created_by=account
    ).secret  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {secret}"}


def _did_you_mean(client: TestClient, q: str) -> str | None:
    body = client.get("/api/v1/search", params={"q": q}).json()
    return body["did_you_mean"]


def test_words_of_a_repository_made_private_are_not_suggested_at_the_next_request(
    client: TestClient, session: Session
) -> None:
    alice = make_account(session, "alice")
    make_org(session, alice, "acme")
    owner = _bearer(session, alice)
    # A public repository whose name starts with the secret word: a suggestion of the word
    # finds it (the last word is a prefix), so it would be offered.
    make_repo(session, "someone/zorgonite-tools", description="Tools")
    make_repo(session, "acme/zorgon", description="Zorgon")
    session.commit()
    assert _did_you_mean(client, "zorgn") == "zorgon"  # while public: offered
    assert "acme/zorgon" in client.get("/browse", params={"source": "hub"}).text
    assert client.get("/api/v1/repositories/acme/zorgon").status_code == 200
    public = client.get("/v1/search", params={"q": "zorgon"}).json()
    assert sorted(r["name"] for r in public["results"]) == [
        "acme/zorgon",
        "someone/zorgonite-tools",
    ]

    made = client.put(
        "/api/v1/repositories/acme/zorgon/visibility",
        json={"visibility": "private"},
        headers=owner,
    )
    assert made.status_code == 200, made.text
    assert _did_you_mean(client, "zorgn") is None
    # and nothing else shows it to an anonymous caller either
    found = client.get("/api/v1/search", params={"q": "zorgon"}).json()
    assert [r["name"] for r in found["results"]] == ["someone/zorgonite-tools"]
    assert found["facets"]["publisher"] == [] or all(
        f["value"] != "acme" for f in found["facets"]["publisher"]
    )
    docker = client.get("/v1/search", params={"q": "zorgon"}).json()
    assert [r["name"] for r in docker["results"]] == ["someone/zorgonite-tools"]
    for path in (
        "/api/v1/repositories/acme/zorgon",
        "/v2/repositories/acme/zorgon",
        "/r/acme/zorgon",
    ):
        assert client.get(path).status_code == 404
    assert "acme/zorgon" not in client.get("/browse", params={"source": "hub"}).text


def test_an_unpublished_product_is_gone_from_everything_at_the_next_request(
    client: TestClient, session: Session
) -> None:
    from tests.factories import make_product

    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    make_product(
        session, acme, alice, "quibbler", title="Quibbler", summary="Frobnicating quibbles"
    )
    make_repo(session, "someone/quibblerish", description="Tools")  # keeps "did you mean" busy
    owner = _bearer(session, alice)
    outsider = _bearer(session, make_account(session, "olga"))
    session.commit()

    def seen(headers: dict[str, str]) -> list[str]:
        """Every place the listing's name or words showed up for this caller."""
        found = []
        api = client.get("/api/v1/search", params={"q": "frobnicating"}, headers=headers).json()
        if api["total"] or api["results"]:
            found.append("api search")
        spelt = client.get("/api/v1/search", params={"q": "quibler"}, headers=headers).json()
        if "acme/quibbler" in str(spelt) or spelt["did_you_mean"] == "quibbler":
            found.append("api search, misspelt")
        if client.get("/v1/search", params={"q": "frobnicating"}).json()["num_results"]:
            found.append("docker search")
        products = client.get("/api/v1/products", params={"q": "quibbler"}, headers=headers)
        if products.json()["total"]:
            found.append("product list")
        for path in (
            "/api/v1/products/acme/quibbler",
            "/api/v1/products/acme/quibbler/tiers",
            "/api/v1/products/acme/quibbler/access",
            "/v2/repositories/acme/quibbler",
            "/api/v1/repositories/acme/quibbler",
        ):
            if client.get(path, headers=headers).status_code != 404:
                found.append(path)
        for page in (
            "/",
            "/browse?q=frobnicating",
            "/search?q=frobnicating",
            "/products/acme/quibbler",
            "/r/acme/quibbler",
        ):
            if "Frobnicating" in client.get(page).text:
                found.append(page)
        access = client.get(
            "/api/v1/registry/access", params={"repository": "acme/quibbler"}, headers=headers
        ).json()
        if access["refused"] and access["refused"][0]["reason"] != "no_access":
            found.append("registry access")
        return found

    # While published, every probe finds it (so each can tell).
    for caller in (outsider, {}):
        assert len(seen(caller)) == 12
    unpublished = client.post(
        "/api/v1/products/acme/quibbler/status", json={"status": "draft"}, headers=owner
    )
    assert unpublished.status_code == 200, unpublished.text
    assert seen(outsider) == []
    assert seen({}) == []
