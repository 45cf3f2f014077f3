"""No registry token outlives the credential it was made from, through the HTTP app on SQLite
and PostgreSQL: a personal or robot access token, a refresh token made from a personal
token, a build's credential. Each expires at its own time (before, at and after the
registry token's lifetime); the token /token hands out must be dead by then."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.builds import queue
from store.builds.models import Build, BuildSource
from store.config import Settings
from store.registry import tokens
from store.registry.routes import registry_state
from tests.factories import make_account, make_org
from tests.search.helpers import make_repo

SERVICE = "store-registry"
SCOPE = "repository:acme/app:pull,push"
# Seconds from now to the credential's end: well within, just within, at and past the
# registry token's lifetime (300 s), and none.
ENDS = [90, 299, 300, 301, 3000, None]


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def _claims(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    claims = tokens.decode_unverified(body["token"])[1]
    assert claims["access"], "the credential was meant to be granted something"
    # What the client is told agrees with the token itself (a token handed out again is
    # told what is left of it).
    assert 0 <= body["expires_in"] <= claims["exp"] - claims["iat"]
    return claims


def _check(claims: dict[str, Any], end: int | None, settings: Settings) -> None:
    if end is None:
        assert claims["exp"] - claims["iat"] == settings.registry_token_ttl
    else:
        assert claims["exp"] <= end, f"the token lives {claims['exp'] - end} s past its source"


def _world(session: Session) -> dict[str, Any]:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    repo = make_repo(session, "acme/app", private=True)
    return {"alice": alice, "acme": acme, "repo": repo}


def _end(offset: int | None) -> tuple[datetime | None, int | None]:
    if offset is None:
        return None, None
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=offset)
    return moment, int(moment.timestamp())


@pytest.mark.parametrize("offset", ENDS)
@pytest.mark.parametrize("kind", ["personal", "robot"])
def test_an_access_token_s_registry_token_ends_with_it(
    client: TestClient, session: Session, settings: Settings, kind: str, offset: int | None
) -> None:
    world = _world(session)
    expires_at, end = _end(offset)
    issued = accounts.create_token(
        session,
        kind=kind,
        name="ci",
        scopes=["pull", "push"],
        created_by=world["alice"],
        org=world["acme"] if kind == "robot" else None,
        expires_at=expires_at,
    )
    session.commit()
    user = "alice" if kind == "personal" else "robot"
    answer = client.get(
        "/token",
        params={"service": SERVICE, "scope": SCOPE},
        headers=_basic(user, issued.secret),
    )
    _check(_claims(answer), end, settings)
    # Asked again at once (the same grant: a token signed moments ago may be handed out
    # again), the answer holds too.
    again = client.get(
        "/token",
        params={"service": SERVICE, "scope": SCOPE},
        headers=_basic(user, issued.secret),
    )
    _check(_claims(again), end, settings)


@pytest.mark.parametrize("offset", ENDS)
def test_a_refresh_token_s_registry_token_ends_with_its_personal_token(
    client: TestClient, session: Session, settings: Settings, offset: int | None
) -> None:
    world = _world(session)
    expires_at, end = _end(offset)
    issued = accounts.create_token(
        session,
        kind="personal",
        name="cli",
        scopes=["pull", "push"],
        created_by=world["alice"],
        expires_at=expires_at,
    )
    session.commit()
    login = client.get(
        "/token",
        params={"service": SERVICE, "scope": SCOPE, "offline_token": "true"},
        headers=_basic("alice", issued.secret),
    )
    _check(_claims(login), end, settings)
    refresh = login.json()["refresh_token"]
    registry_state(client.app).reuse.clear()  # a token of its own, not the one above again
    answer = client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": SERVICE,
            "scope": SCOPE,
        },
    )
    _check(_claims(answer), end, settings)


@pytest.mark.parametrize("offset", [90, 299, 301, 3000])
def test_a_build_s_registry_token_ends_with_its_credential(
    client: TestClient, session: Session, settings: Settings, offset: int
) -> None:
    world = _world(session)
    session.add(
        BuildSource(
            repository_id=world["repo"].id,
            url="https://git.example.com/acme/app.git",
            webhook_secret_sealed="unused",
            configured_by_id=world["alice"].id,
        )
    )
    build = Build(
        repository_id=world["repo"].id,
        repository="acme/app",
        namespace="acme",
        source_url="https://git.example.com/acme/app.git",
        ref="refs/heads/main",
        docker_tag="latest",
        dockerfile="Dockerfile",
        context=".",
        trigger="manual",
        status="running",
    )
    session.add(build)
    session.commit()
    end = int(time.time()) + offset
    user, password = queue.credential(settings, build.id, expires=end)
    answer = client.get(
        "/token", params={"service": SERVICE, "scope": SCOPE}, headers=_basic(user, password)
    )
    _check(_claims(answer), end, settings)
