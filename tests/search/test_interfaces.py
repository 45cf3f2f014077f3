"""The JSON API, the Docker search API, the HTML page, hostile input and the schema check."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from store.licensing import entitlements
from store.models import Base
from store.search.engine_objects import include_object
from tests.factories import api_token, auth, make_account, make_org, make_product, tier_of
from tests.search.helpers import make_repo


@pytest.fixture
def data(session: Session) -> dict:
    owner = make_account(session, "pub")
    org = make_org(session, owner, "acme", name="Acme")
    product = make_product(session, org, owner, "redis", title="Acme Redis", summary="Redis")
    make_product(session, org, owner, "hidden", title="Hidden redis", publish=False)
    for i in range(30):
        make_repo(session, f"community/redis-{i:02d}", description="redis fork", star_count=i)
    make_repo(session, "community/priv", description="redis", private=True)
    session.commit()
    return {"owner": owner, "product": product}


def test_api_search_shape_and_entitled_flag(
    client: TestClient, session: Session, data: dict
) -> None:
    response = client.get("/api/v1/search", params={"q": "redis", "per_page": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 31 and body["total_exact"] and body["pages"] == 7
    first = body["results"][0]
    assert first["name"] == "acme/redis" and first["source"] == "store"
    assert first["pricing"] == ["free"] and first["price"]["min_minor"] == 0
    assert first["entitled"] is None and first["url"] == "/products/acme/redis"
    assert {f["value"]: f["count"] for f in body["facets"]["source"]} == {"store": 1, "hub": 30}

    buyer = make_account(session, "buyer")
    entitlements.get_free_tier(session, account=buyer, tier=tier_of(data["product"], "free"))
    token = api_token(session, buyer)
    session.commit()
    body = client.get("/api/v1/search", params={"q": "redis"}, headers=auth(token)).json()
    flags = {r["name"]: r["entitled"] for r in body["results"] if r["source"] == "store"}
    assert flags == {"acme/redis": True}
    owner_token = api_token(session, data["owner"])
    session.commit()
    body = client.get("/api/v1/search", params={"q": "hidden"}, headers=auth(owner_token)).json()
    assert [r["name"] for r in body["results"]] == ["acme/hidden"]
    assert client.get("/api/v1/search", params={"q": "hidden"}).json()["results"] == []


def test_docker_search_shape_and_paging(client: TestClient, data: dict) -> None:
    response = client.get("/v1/search", params={"q": "redis", "n": 10, "page": 2})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"num_results", "num_pages", "page", "page_size", "query", "results"}
    assert body["num_results"] == 31 and body["num_pages"] == 4 and body["page"] == 2
    assert body["page_size"] == 10 and body["query"] == "redis" and len(body["results"]) == 10
    assert set(body["results"][0]) == {
        "name",
        "description",
        "star_count",
        "is_official",
        "is_automated",
    }
    first = client.get("/v1/search", params={"q": "redis"}).json()
    assert first["page_size"] == 25 and first["results"][0]["name"] == "acme/redis"
    names = [r["name"] for r in first["results"]]
    assert "community/priv" not in names and "acme/hidden" not in names
    last = client.get("/v1/search", params={"q": "redis", "n": 10, "page": 4}).json()
    assert len(last["results"]) == 1
    for params in ({"n": 0}, {"n": 101}, {"n": "x"}, {"page": 0}, {"page": 10**12}):
        bad = client.get("/v1/search", params={"q": "redis", **params})
        assert bad.status_code == 400, params
        assert bad.json()["error"] == "bad_query"


HOSTILE = [
    '"',
    '""',
    "'",
    "*",
    "**",
    "-",
    "--",
    "OR",
    "OR OR",
    "redis OR",
    "AND NOT",
    "NEAR(a b)",
    "col:redis",
    "{fts_name}: redis",
    "fts_facets:v:hidden",
    "v:hidden",
    "x:all",
    "^redis",
    "redis)",
    "((redis",
    "redis\x00",
    "re\ndis",
    "%_%",
    "'; DROP TABLE search_documents; --",
    "\\",
    "redis" * 60,
    "a" * 5000,
    "🦄 redis ü",
    "日本語 検索",
    "ﬁle",
    "\u202eredis",
    " ".join(["w"] * 40),
    "-" * 300,
]


@pytest.mark.parametrize("q", HOSTILE)
def test_hostile_queries_never_500(client: TestClient, data: dict, q: str) -> None:
    for url in ("/api/v1/search", "/v1/search", "/search"):
        response = client.get(url, params={"q": q})
        assert response.status_code in (200, 400), (url, q, response.text[:200])
        if url != "/search" and response.status_code == 200:
            names = [r["name"] for r in response.json()["results"]]
            assert "community/priv" not in names and "acme/hidden" not in names


def test_hostile_filters(client: TestClient, data: dict) -> None:
    for params in (
        {"kind": "bogus"},
        {"page": "-1"},
        {"per_page": "1000"},
        {"per_page": "abc"},
        {"category": "x" * 500},
    ):
        response = client.get("/api/v1/search", params={"q": "redis", **params})
        assert response.status_code == 400, params
    ok = client.get("/api/v1/search", params={"q": "redis", "publisher": "ghost"})
    assert ok.status_code == 200 and ok.json()["results"] == []


def test_search_page(client: TestClient, data: dict) -> None:
    response = client.get("/search", params={"q": "redis fork"})
    assert response.status_code == 200
    html = response.text
    assert "<mark>redis</mark>" in html and "community/redis-" in html
    assert "Refine" in html and "Hub repositories" in html
    empty = client.get("/search", params={"q": "nothing matches this", "kind": "plugin"})
    assert empty.status_code == 200 and "Nothing matched" in empty.text
    assert "without filters" in empty.text
    bad = client.get("/search", params={"q": "x" * 300})
    assert bad.status_code == 400 and "longer than" in bad.text


def test_models_match_migrations_without_engine_objects(engine: Engine) -> None:
    with engine.connect() as conn:
        opts = {"compare_type": True, "include_object": include_object}
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
    assert diff == []


def test_a_two_character_prefix_is_highlighted_in_names_only() -> None:
    """It matches names and titles only (store.search.query.head_prefix), so a summary's
    words that merely start with it are not marked; the 2-character word itself is."""
    from store.search.query import parse
    from store.web.routes_search import highlighter

    highlight = highlighter(parse("re", as_you_type=True))
    assert str(highlight("redis-ha", name=True)) == "<mark>redis</mark>-ha"
    assert str(highlight("release notes about re")) == "release notes about <mark>re</mark>"
    longer = highlighter(parse("rel", as_you_type=True))
    assert str(longer("release notes")) == "<mark>release</mark> notes"


def test_header_suggestions_search_as_the_signed_in_viewer(
    client: TestClient, session: Session, data: dict
) -> None:
    """The header box's suggestions are the results page's first matches for whoever is
    signed in: the publisher is offered its draft, a visitor is not."""
    from tests.web.helpers import login

    def names(q: str) -> list[str]:
        response = client.get("/search/suggestions", params={"q": q})
        assert response.status_code == 200
        assert response.headers["cache-control"] == "private, no-store"
        return [r["name"] for r in response.json()["results"]]

    assert names("hidden red") == []
    assert names("r") == []  # one character offers nothing
    assert names("x" * 300) == []  # refused by the search: nothing offered, no error
    assert names("redis")[0] == "acme/redis" and len(names("redis")) == 6
    login(client, "pub")
    assert names("hidden red") == ["acme/hidden"]
    page = client.get("/search", params={"q": "hidden red"})
    assert "acme/hidden" in page.text
