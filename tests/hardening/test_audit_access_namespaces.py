"""A namespace's repositories never pass to someone else with its name, through the HTTP app
on SQLite and PostgreSQL: an account that alone owns an organization with repositories is
not deleted with it (the organization's name would be freed, and whoever took it next would
own, pull and overwrite the images left under it)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session

from store.accounts.models import Namespace
from store.config import Settings
from store.errors import Conflict
from store.privacy import lifecycle
from store.registry import tokens
from store.registry.models import HubRepository
from tests.factories import PASSWORD, make_account, make_org
from tests.search.helpers import make_repo

SERVICE = "store-registry"


def _actions(client: TestClient, user: str, repository: str) -> list[str]:
    basic = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    answer = client.get(
        "/token",
        params={"service": SERVICE, "scope": f"repository:{repository}:pull,push,delete"},
        headers={"Authorization": f"Basic {basic}"},
    )
    if answer.status_code == 401:
        return []
    assert answer.status_code == 200, answer.text
    access = tokens.decode_unverified(answer.json()["token"])[1]["access"]
    return sorted(a for entry in access for a in entry["actions"])


@pytest.mark.parametrize("visibility", ["private", "public"])
def test_a_deleted_owner_s_repositories_never_pass_to_whoever_takes_the_name(
    client: TestClient, session: Session, settings: Settings, visibility: str
) -> None:
    alice, mallory = make_account(session, "alice"), make_account(session, "mallory")
    make_org(session, alice, "acme")  # nothing but its owner, and a repository
    make_repo(session, "acme/secret", private=visibility == "private")
    session.commit()
    assert _actions(client, "alice", "acme/secret") == ["delete", "pull", "push"]
    before = _actions(client, "mallory", "acme/secret")
    assert before == (["pull"] if visibility == "public" else [])

    problems: list[str] = []
    try:
        lifecycle.delete_account(session, settings=settings, account=alice, password=PASSWORD)
        session.commit()
    except Conflict as refused:
        session.rollback()
        problems = refused.extra["problems"]
    # Whoever tries the name next gets nothing more than before.
    try:
        make_org(session, mallory, "acme")
        session.commit()
    except Conflict:
        session.rollback()
    assert _actions(client, "mallory", "acme/secret") == before
    # The deletion was refused, saying why; the name and its owner stay.
    assert problems == ["acme has repositories: delete them first, or make another member an owner"]
    assert _actions(client, "alice", "acme/secret") == ["delete", "pull", "push"]


def test_an_organization_whose_repositories_are_deleted_goes_with_its_owner(
    client: TestClient, session: Session, settings: Settings
) -> None:
    alice = make_account(session, "alice")
    make_org(session, alice, "acme")
    make_repo(session, "acme/secret", private=True)
    session.commit()
    assert lifecycle.deletion_blockers(session, alice) != []
    session.execute(delete(HubRepository).where(HubRepository.namespace == "acme"))
    assert lifecycle.deletion_blockers(session, alice) == []
    lifecycle.delete_account(session, settings=settings, account=alice, password=PASSWORD)
    session.commit()
    assert session.get(Namespace, "acme") is None


def test_a_deleted_user_s_name_is_never_given_again(
    client: TestClient, session: Session, settings: Settings
) -> None:
    """Images under a personal namespace, with or without a hub record (a push whose
    notification was lost), stay out of reach: the username stays reserved after deletion,
    so nobody signs up under it and inherits them."""
    alice = make_account(session, "alice")
    make_repo(session, "alice/app", private=False)
    session.commit()
    lifecycle.delete_account(session, settings=settings, account=alice, password=PASSWORD)
    session.commit()
    for name in ("alice/app", "alice/unrecorded"):
        assert _actions(client, "alice", name) == []
    taken = client.post(
        "/api/v1/accounts",
        json={"username": "alice", "email": "new-alice@example.com", "password": PASSWORD},
    )
    assert (taken.status_code, taken.json()["error"]) == (409, "username_taken"), taken.text
    with pytest.raises(Conflict):
        make_org(session, make_account(session, "mallory"), "alice")
    session.rollback()
    assert session.get(Namespace, "alice") is not None
