"""A pull granted through an entitlement lasts no longer than the entitlement, through the HTTP
app on SQLite and PostgreSQL: a customer's registry token (by password, personal token,
refresh token, license key, or the robot token of the organization holding it) is dead by
the time the entitlement (or its grace period) ends, while the publisher's own token, or a
customer's whose entitlement has no end, lives its full lifetime."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.config import Settings
from store.db import utcnow
from store.licensing import entitlements
from store.licensing import service as licensing
from store.registry import tokens
from store.registry.routes import registry_state
from tests.factories import PASSWORD, make_account, make_org, make_product, paid_tier, tier_of

SERVICE = "store-registry"
REPOS = ("acme/app", "acme/app/worker")
# How the entitlement ends, seconds from now: its end (None: no end), and its grace period's.
ENDINGS = {
    "ends_soon": (90, None),
    "ends_at_the_token_s_lifetime": (300, None),
    "ends_later": (3000, None),
    "in_grace_ending_soon": (-3600, 120),
    "no_end": (None, None),
}
HOLDERS = ("password", "personal", "refresh", "license", "robot")


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def _claims(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    claims = tokens.decode_unverified(answer.json()["token"])[1]
    assert [a["actions"] for a in claims["access"]] == [["pull"]], claims["access"]
    return claims


def _ask(client: TestClient, holder: str, secrets: dict[str, str], repo: str) -> dict[str, Any]:
    scope = f"repository:{repo}:pull"
    registry_state(client.app).reuse.clear()  # a token of its own for each request
    if holder == "refresh":
        answer = client.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": secrets["refresh"],
                "service": SERVICE,
                "scope": scope,
            },
        )
    else:
        user, secret = {
            "password": ("cust", PASSWORD),
            "personal": ("cust", secrets["personal"]),
            "license": ("license", secrets["license"]),
            "robot": ("ci", secrets["robot"]),
            "publisher": ("owner", PASSWORD),
        }[holder]
        answer = client.get(
            "/token", params={"service": SERVICE, "scope": scope}, headers=_basic(user, secret)
        )
    return _claims(answer)


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_pull_through_an_entitlement_ends_with_it(
    client: TestClient, app: FastAPI, session: Session, settings: Settings, ending: str
) -> None:
    owner, customer = make_account(session, "owner"), make_account(session, "cust")
    acme = make_org(session, owner, "acme")
    buyers = make_org(session, customer, "buyers")
    product = make_product(session, acme, owner, "app", tiers=[paid_tier()])
    now = utcnow().replace(microsecond=0)
    end_offset, grace_offset = ENDINGS[ending]
    ends_at = now + timedelta(seconds=end_offset) if end_offset is not None else None
    grace = now + timedelta(seconds=grace_offset) if grace_offset is not None else None
    held = []
    for holder in ({"account": customer}, {"org": buyers}):
        entitlement = entitlements.grant(
            session, actor=owner, tier=tier_of(product, "pro"), **holder
        )
        entitlement.ends_at, entitlement.grace_until = ends_at, grace
        held.append(entitlement)
    session.flush()
    secrets = {
        "personal": accounts.create_token(
            session, kind="personal", name="cli", scopes=["pull"], created_by=customer
        ).secret,
        "robot": accounts.create_token(
            session, kind="robot", name="ci", scopes=["pull"], created_by=customer, org=buyers
        ).secret,
        "license": licensing.issue_license(session, app.state.keyring, settings, held[0]).token,
    }
    session.commit()
    login = client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "cust",
            "password": PASSWORD,
            "service": SERVICE,
            "access_type": "offline",
        },
    )
    assert login.status_code == 200, login.text
    secrets["refresh"] = login.json()["refresh_token"]

    usable_end = max(m for m in (ends_at, grace) if m is not None) if ends_at else None
    for repo in REPOS:
        for holder in HOLDERS:
            claims = _ask(client, holder, secrets, repo)
            where = f"{holder} pulling {repo}, {ending}"
            if usable_end is None:
                assert claims["exp"] - claims["iat"] == settings.registry_token_ttl, where
            else:
                over = claims["exp"] - int(usable_end.timestamp())
                assert over <= 0, f"{where}: the token lives {over} s past the entitlement"
        # The publisher's pull does not hang on the entitlement: a token of full lifetime.
        claims = _ask(client, "publisher", secrets, repo)
        assert claims["exp"] - claims["iat"] == settings.registry_token_ttl
