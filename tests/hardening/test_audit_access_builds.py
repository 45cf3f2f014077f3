"""A running build pushes on the word of the account that saved its settings, through the HTTP
app on SQLite and PostgreSQL: once that account may no longer push to the repository (it
left the organization, was demoted to viewer, or was disabled), the build's credential gets
no token at all, also for a build that started while it still could (its push comes at the
end). Whoever saves the settings again vouches for the builds from then on."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account
from store.builds import queue
from store.builds.models import Build
from store.config import Settings
from store.registry import tokens
from tests.factories import api_token, auth, make_account, make_admin, make_org

SOURCE = {
    "url": "https://git.example.com/acme/app.git",
    "rules": [{"ref_kind": "branch", "pattern": "main", "docker_tag": "latest"}],
}
SCOPE = "repository:acme/app:pull,push"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _leave(session: Session, eddie: Account, admin: Account) -> None:
    org = accounts.get_organization(session, "acme")
    accounts.remove_member(session, org=org, actor=admin, username=eddie.username)


def _demote(session: Session, eddie: Account, admin: Account) -> None:
    org = accounts.get_organization(session, "acme")
    accounts.remove_member(session, org=org, actor=admin, username=eddie.username)
    accounts.add_member(session, org=org, actor=admin, account=eddie, role="viewer")


def _disable(session: Session, eddie: Account, admin: Account) -> None:
    eddie.is_active = False


@pytest.mark.parametrize("change", [_leave, _demote, _disable])
def test_a_build_pushes_only_while_its_configurer_may(
    client: TestClient,
    session: Session,
    settings: Settings,
    change: Callable[[Session, Account, Account], None],
) -> None:
    alice, eddie = make_account(session, "alice"), make_account(session, "eddie")
    acme = make_org(session, alice, "acme")
    admin = make_admin(session)
    accounts.add_member(session, org=acme, actor=admin, account=eddie, role="editor")
    owner, editor = api_token(session, alice), api_token(session, eddie)
    session.commit()
    saved = client.put(
        "/api/v1/repositories/acme/app/build-source", json=SOURCE, headers=auth(editor)
    )
    assert saved.status_code == 200, saved.text
    started = client.post(
        "/api/v1/repositories/acme/app/builds", json={"ref": "main"}, headers=auth(editor)
    )
    assert started.status_code in (200, 201, 202), started.text
    build = session.get(Build, uuid.UUID(started.json()["id"]))
    assert build is not None
    build.status = "running"
    session.commit()
    user, password = queue.credential(settings, build.id, expires=int(time.time()) + 600)

    def actions() -> list[str]:
        answer = client.get(
            "/token",
            params={"service": settings.registry_service, "scope": SCOPE},
            headers=_basic(user, password),
        )
        if answer.status_code == 401:
            return []
        assert answer.status_code == 200, answer.text
        access: list[dict[str, Any]] = tokens.decode_unverified(answer.json()["token"])[1]["access"]
        return sorted(a for entry in access for a in entry["actions"])

    assert actions() == ["pull", "push"]
    change(session, eddie, admin)  # in the middle of the build
    session.commit()
    assert actions() == []
    # An owner saves the settings again: the builds are on her word now.
    again = client.put(
        "/api/v1/repositories/acme/app/build-source", json=SOURCE, headers=auth(owner)
    )
    assert again.status_code == 200, again.text
    assert actions() == ["pull", "push"]
