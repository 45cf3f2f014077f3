"""One "may pull" rule: the token endpoint, the explanations (/api/v1/registry/access, the
product page, the token endpoint's refusal) and search visibility agree, for every
entitlement state x repository kind x principal, on SQLite and PostgreSQL.

The expectation is written here from the rule's statement (store.registry.grants), not
computed by the code under test.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.db import utcnow
from store.licensing import entitlements
from store.licensing import service as licensing
from store.licensing.models import Entitlement
from store.registry import hub, tokens
from store.registry.explain import access_for
from store.search import service as search
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier, tier_of

SERVICE = "store-registry"

# Entitlement state -> (usable?, the refusal reason a customer is given when not)
STATES: dict[str, tuple[bool, str]] = {
    "none": (False, "no_license"),  # never bought (or a checkout still pending)
    "active": (True, ""),
    "trialing": (True, ""),
    "past_due_in_grace": (True, ""),
    "past_grace": (False, "expired"),
    "suspended": (False, "suspended"),
    "revoked": (False, "revoked"),
    "expired": (False, "expired"),
    "not_yet_started": (False, "no_license"),
}
# Repository kind -> name
KINDS = {
    "product": "acme/app",
    "sub_repository": "acme/app/worker",
    "unlisted": "acme/tools",
    "public_marked": "acme/open",
    # marked public, but its product is sold through a paid tier: the mark opens nothing
    "paid_marked": "acme/app/open",
}
PRINCIPALS = ("anonymous", "customer", "owner", "editor", "viewer", "robot", "license", "admin")
MEMBERS = ("owner", "editor", "viewer", "robot", "admin")
ACCOUNTS = ("customer", "owner", "editor", "viewer", "admin")


def expected(principal: str, kind: str, state: str) -> bool:
    """The rule, stated once more in plain terms."""
    usable = STATES[state][0]
    if kind == "paid_marked":
        kind = "sub_repository"
    if principal == "license" and not usable:
        return False  # the credential itself is refused (401) while its entitlement is not usable
    if kind == "public_marked":
        return True
    if principal in MEMBERS:
        return True
    if kind == "unlisted":
        return False
    return principal in ("customer", "license") and usable


def expected_reason(principal: str, kind: str, state: str) -> str:
    if kind == "unlisted":
        return "no_access"
    if principal == "anonymous":
        return "login_required"
    return STATES[state][1]


@dataclass
class World:
    headers: dict[str, dict[str, str]]
    customer: Any
    admin: Any
    product: Any


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def _set_state(session: Session, held: Entitlement, state: str) -> None:
    now = utcnow()
    day = timedelta(days=1)
    values: dict[str, Any] = {
        "active": {},
        "trialing": {"source": "trial", "ends_at": now + 7 * day},
        "past_due_in_grace": {"ends_at": now - day, "grace_until": now + 2 * day},
        "past_grace": {"ends_at": now - 3 * day, "grace_until": now - day},
        "suspended": {"status": "suspended"},
        "revoked": {"status": "revoked", "revoked_at": now},
        "expired": {"status": "expired", "ends_at": now - day},
        "not_yet_started": {"starts_at": now + day},
    }[state]
    for key, value in values.items():
        setattr(held, key, value)
    session.flush()


def _world(session: Session, app: FastAPI, state: str) -> World:
    owner = make_account(session, "owner1")
    editor, viewer = make_account(session, "editor1"), make_account(session, "viewer1")
    customer = make_account(session, "cust1")
    admin = make_admin(session)
    acme = make_org(session, owner, "acme")
    for who, role in ((editor, "editor"), (viewer, "viewer")):
        accounts.add_member(session, org=acme, actor=admin, account=who, role=role)
    product = make_product(session, acme, owner, "app", tiers=[paid_tier()])
    for name in KINDS.values():
        hub.ensure_repository(session, name)
    hub.set_visibility(session, name="acme/open", visibility="public")
    hub.set_visibility(session, name="acme/app/open", visibility="public")  # an old mark
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    bearer: dict[str, dict[str, str]] = {}
    for name, account in (
        ("customer", customer),
        ("owner", owner),
        ("editor", editor),
        ("viewer", viewer),
        ("admin", admin),
    ):
        secret = accounts.create_token(
            session, kind="personal", name="t", scopes=["api", "pull"], created_by=account
        ).secret
        headers[name] = _basic(account.username, secret)
        bearer[name] = {"Authorization": f"Bearer {secret}"}
    robot = accounts.create_token(
        session, kind="robot", name="ci", scopes=["pull"], created_by=owner, org=acme
    ).secret
    headers["robot"] = _basic("ci", robot)
    headers["license"] = {}
    if state != "none":
        held = entitlements.grant(
            session, actor=owner, tier=tier_of(product, "pro"), account=customer
        )
        document = licensing.issue_license(session, app.state.keyring, app.state.settings, held)
        headers["license"] = _basic("license", document.token)
        _set_state(session, held, state)
    session.commit()
    headers.update({f"bearer:{k}": v for k, v in bearer.items()})
    return World(headers, customer, admin, product)


def _token(client: TestClient, headers: dict[str, str], repo: str) -> tuple[bool, Any]:
    response = client.get(
        "/token", params={"service": SERVICE, "scope": f"repository:{repo}:pull"}, headers=headers
    )
    if response.status_code == 200:
        access = tokens.decode_unverified(response.json()["token"])[1]["access"]
        return any("pull" in a["actions"] for a in access), None
    assert response.status_code == 401, response.text
    assert response.headers.get("www-authenticate")
    return False, response.json()["errors"][0]


@pytest.mark.parametrize("state", list(STATES))
def test_token_explanation_and_search_agree(
    client: TestClient, app: FastAPI, session: Session, state: str
) -> None:
    world = _world(session, app, state)
    for principal in PRINCIPALS:
        if principal == "license" and state == "none":
            continue  # no entitlement, no license
        for kind, repo in KINDS.items():
            want = expected(principal, kind, state)
            where = f"{principal} x {kind} x {state}"
            granted, error = _token(client, world.headers[principal], repo)
            assert granted is want, where
            if not granted and error is not None and error["code"] == "DENIED":
                reason = error["detail"][0]["reason"]
                if principal not in ("robot", "license"):
                    assert reason == expected_reason(principal, kind, state), where
            if principal not in (*ACCOUNTS, "anonymous"):
                continue
            # The JSON API's explanation gives the same decision and reason.
            auth = world.headers.get(f"bearer:{principal}", {})
            check = client.get("/api/v1/registry/access", params={"repository": repo}, headers=auth)
            assert check.status_code == 200, check.text
            body = check.json()
            assert bool(body["granted"]) is want, where
            if not want:
                assert body["refused"][0]["reason"] == expected_reason(principal, kind, state)
                if error is not None:
                    assert error["detail"][0]["reason"] == body["refused"][0]["reason"], where
            account = None if principal == "anonymous" else _account(session, principal, world)
            if kind == "product":
                page = access_for(session, account, world.product)
                assert page.allowed is want, where
                if not want:
                    assert page.reason == expected_reason(principal, kind, state), where
                continue
            # Search shows the repository exactly to those who may pull it.
            found = {
                h.doc.name
                for h in search.search(session, q=repo.split("/")[-1], account=account).hits
            }
            assert (repo in found) is want, where


def _account(session: Session, principal: str, world: World) -> Any:
    if principal == "customer":
        return world.customer
    if principal == "admin":
        return world.admin
    return accounts.get_account_by_username(session, f"{principal}1")
