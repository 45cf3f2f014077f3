"""Other forms of a word: stems, mixed-case parts, the last word as a prefix; and pull
counts that reach search without a reindex."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.search import query, service
from store.search.query import index_text, parse, stem
from tests.factories import make_account, make_org, make_product
from tests.search.helpers import make_repo


def test_index_text_adds_parts_and_stems_after_the_words() -> None:
    text = index_text("PGVault — highly available PostgreSQL")
    tokens = text.split()
    assert tokens[:4] == ["pgvault", "highly", "available", "postgresql"]
    assert {"pg", "vault", "postgre", "sql", "avail", "high"} <= set(tokens[4:])
    assert len(tokens) == len(set(tokens))
    assert stem("running") == "run" and stem("k8s") == "k8s"


def test_stems_are_the_c_snowballs_and_the_same_as_the_pure_python_ones() -> None:
    # PyStemmer (a dependency) is what snowballstemmer uses when installed: an index built
    # with either stemmer must be queried with the same stems.
    import Stemmer
    from snowballstemmer.english_stemmer import EnglishStemmer

    assert isinstance(query._stemmer(), Stemmer.Stemmer)
    pure = EnglishStemmer()
    words = [
        "running", "highly", "available", "generously", "replication", "databases",
        "caresses", "ponies", "ties", "feed", "agreed", "plastered", "motoring", "sing",
        "conflated", "troubled", "sized", "hopping", "filing", "happy", "relational",
        "conditional", "rational", "valenci", "hesitanci", "digitizer", "conformabli",
        "radicalli", "differentli", "vileli", "analogousli", "vietnamization", "predication",
        "operator", "feudalism", "decisiveness", "hopefulness", "callousness", "formaliti",
        "sensitiviti", "sensibiliti", "triplicate", "formative", "formalize", "electriciti",
        "electrical", "hopeful", "goodness", "revival", "allowance", "inference", "airliner",
        "gyroscopic", "adjustable", "defensible", "irritant", "replacement", "adjustment",
        "dependent", "adoption", "homologou", "communism", "activate", "angulariti",
        "homologous", "effective", "bowdlerize", "probate", "rate", "cease", "controll",
        "roll", "skies", "dying", "lying", "tying", "news", "innings", "outings", "cannings",
        "howe", "proceed", "exceed", "succeed", "gently", "onlies", "generate", "communal",
        "arsenal", "postgresql", "kubernetes", "observability", "zzzzzzzzzz", "ab",
    ]  # fmt: skip
    assert [stem(w) for w in words] == [pure.stemWord(w) for w in words]


def test_last_word_is_a_prefix_or_its_stem() -> None:
    groups = parse("fast runs", as_you_type=True).groups
    assert [p.tokens for p in groups[0]] == [("fast",)]
    assert [(p.tokens, p.prefix) for p in groups[1]] == [(("runs",), True), (("run",), False)]
    assert parse("redis", as_you_type=True).exact_name == "redis"
    # a space ends the word: no prefix
    assert not parse("runs ", as_you_type=True).groups[0][0].prefix


@pytest.fixture
def catalog(session: Session) -> dict:
    owner = make_account(session, "pub")
    org = make_org(session, owner, "northwind", name="Northwind")
    pgvault = make_product(
        session,
        org,
        owner,
        "pgvault",
        title="PGVault — highly available PostgreSQL",
        summary="PostgreSQL 16 with automatic failover and encrypted backups.",
    )
    make_product(session, org, owner, "redirector", title="Redirector", summary="HTTP redirects")
    make_product(session, org, owner, "runner", title="Job runner", summary="Running batch jobs")
    session.commit()
    return {"pgvault": pgvault}


@pytest.mark.parametrize("q", ["postgres", "pg vault", "pgv", "vault", "PostgreSQL", "failovers"])
def test_pgvault_is_found_by_its_usual_names(session: Session, catalog: dict, q: str) -> None:
    results = service.search(session, q=q)
    assert [h.doc.name for h in results.hits][:1] == ["northwind/pgvault"]


def test_stems_match_other_forms_and_the_prefix_stays_narrow(
    session: Session, catalog: dict
) -> None:
    def names(q: str) -> set[str]:
        return {h.doc.name for h in service.search(session, q=q).hits}

    assert names("runs") == {"northwind/runner"}  # "running" in its summary
    assert names("jobs run") == {"northwind/runner"}
    assert names("redis") == set()  # not "redirector", "redirects"
    assert names("redir") == {"northwind/redirector"}


def test_api_and_page_give_the_same_answer(client: TestClient, catalog: dict) -> None:
    api = client.get("/api/v1/search", params={"q": "postgres"}).json()
    assert [r["name"] for r in api["results"]] == ["northwind/pgvault"]
    page = client.get("/search", params={"q": "postgres"})
    assert page.status_code == 200 and "/products/northwind/pgvault" in page.text
    browse = client.get("/browse", params={"q": "postgres"})
    assert browse.status_code == 200 and "/products/northwind/pgvault" in browse.text
    assert "Redirector" not in browse.text


def _pull_event(name: str) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "action": "pull",
        "timestamp": "2026-11-28T12:00:00Z",
        "target": {
            "repository": name,
            "digest": "sha256:" + "a" * 64,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
        },
        "request": {"method": "GET"},
    }


def test_a_pull_reaches_the_listing_and_the_hub_documents_at_once(
    app: FastAPI, client: TestClient, session: Session, catalog: dict
) -> None:
    make_repo(session, "northwind/pgvault", description="PostgreSQL")
    make_repo(session, "someone/vaultwarden", description="vault")
    session.commit()
    secret = app.state.settings.resolved_notify_secret
    events = [_pull_event("northwind/pgvault") for _ in range(3)]
    events.append(_pull_event("someone/vaultwarden"))
    response = client.post(
        "/registry/events",
        content=json.dumps({"events": events}).encode(),
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        },
    )
    assert response.status_code == 200, response.text
    body = client.get("/api/v1/search", params={"q": "vault"}).json()
    pulls = {(r["source"], r["name"]): r["pull_count"] for r in body["results"]}
    assert pulls == {("store", "northwind/pgvault"): 3, ("hub", "someone/vaultwarden"): 1}
    # the hub repository behind the listing is hidden but counted as well
    session.expire_all()
    from sqlalchemy import select

    from store.search.models import SearchDocument

    hub_doc = session.scalar(
        select(SearchDocument).where(
            SearchDocument.source == "hub", SearchDocument.name == "northwind/pgvault"
        )
    )
    assert hub_doc is not None and hub_doc.pull_count == 3
    # pulls raise the listing's popularity, part of its rank key
    listing = session.scalar(
        select(SearchDocument).where(
            SearchDocument.source == "store", SearchDocument.name == "northwind/pgvault"
        )
    )
    assert listing is not None and listing.popularity > 0


def test_did_you_mean_comes_from_the_visible_vocabulary(
    client: TestClient, session: Session, catalog: dict
) -> None:
    owner = make_account(session, "secretive")
    org = make_org(session, owner, "hushed")
    make_product(session, org, owner, "zeppelin", title="Zeppelin", publish=False)
    session.commit()
    body = client.get("/api/v1/search", params={"q": "postgersql failover"}).json()
    assert body["total"] == 0 and body["did_you_mean"] == "postgresql failover"
    page = client.get("/search", params={"q": "postgersql"})
    assert "Did you mean" in page.text and "/search?q=postgresql" in page.text
    # a draft's words are never offered, a known word needs no correction
    assert client.get("/api/v1/search", params={"q": "zepelin"}).json()["did_you_mean"] is None
    assert client.get("/api/v1/search", params={"q": "vault"}).json()["did_you_mean"] is None
    # nothing within two edits
    assert client.get("/api/v1/search", params={"q": "qqqqqqq"}).json()["did_you_mean"] is None


def test_sorts_order_the_matches(client: TestClient, session: Session, catalog: dict) -> None:
    body = client.get("/api/v1/search", params={"q": "", "sort": "title"}).json()
    titles = [r["title"] for r in body["results"]]
    assert titles == sorted(titles, key=str.lower) and body["sort"] == "title"
    odd = client.get("/api/v1/search", params={"q": "", "sort": "bogus"}).json()
    assert odd["sort"] == "relevance" and "not a sort order" in odd["notice"]
    for sort in ("pulls", "stars", "updated", "price"):
        response = client.get("/api/v1/search", params={"q": "n", "sort": sort})
        assert response.status_code == 200 and response.json()["sort"] == sort
