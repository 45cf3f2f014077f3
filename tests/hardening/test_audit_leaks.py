"""What someone not allowed to see a repository or a listing can learn of it through search
and the hub, right after it stops being visible to them (docs/security.md, "Audit")."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from tests.factories import make_account, make_org
from tests.search.helpers import make_repo


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

    made = client.put(
        "/api/v1/repositories/acme/zorgon/visibility",
        json={"visibility": "private"},
        headers=owner,
    )
    assert made.status_code == 200, made.text
    assert _did_you_mean(client, "zorgn") is None
