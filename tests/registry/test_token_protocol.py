"""The token endpoint never answers 5xx: scopes it cannot use are dropped (a token with no
access for them, as distribution's token specification says), every 401 names how to
authenticate, and no request yields an action that was not asked for or is not allowed."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.registry import tokens
from tests.factories import PASSWORD, make_account, make_admin, make_org, make_product, paid_tier

SERVICE = "store-registry"
HTTP = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def world(session: Session) -> dict[str, dict[str, str]]:
    """Callers by name, with their Basic headers."""
    alice = make_account(session, "alice")
    bob = make_account(session, "bob")
    make_admin(session)
    acme = make_org(session, alice, "acme")
    make_product(session, acme, alice, "app", tiers=[paid_tier()])
    make_product(
        session, acme, alice, "open", tiers=[{"slug": "free", "billing": "free", "public": True}]
    )

    def token(kind: str, scopes: list[str], **owner: object) -> str:
        return accounts.create_token(
            session, kind=kind, name=f"{kind}-{'-'.join(scopes)}", scopes=scopes, **owner
        ).secret

    callers = {
        "anonymous": {},
        "bob": basic("bob", PASSWORD),
        "bob-api-token": basic("bob", token("personal", ["api"], created_by=bob)),
        "bob-pull-token": basic("bob", token("personal", ["pull"], created_by=bob)),
        "alice": basic("alice", PASSWORD),
        "alice-api-token": basic("alice", token("personal", ["api"], created_by=alice)),
        "alice-pull-token": basic("alice", token("personal", ["pull"], created_by=alice)),
        "robot": basic("ci", token("robot", ["pull", "push"], created_by=alice, org=acme)),
        "admin": basic("root-admin", PASSWORD),
    }
    session.commit()
    return callers


def upper_bound(caller: str, kind: str, name: str) -> set[str]:
    """The most a caller may ever get on a resource (the rule may grant less: a repository
    without a product may be private)."""
    if kind == "registry":
        return {"*"} if caller == "admin" else set()
    if caller.endswith("api-token"):
        return set()  # an api-only token has no registry scope at all
    if name.startswith("acme/"):
        if caller == "alice":
            return {"pull", "push", "delete"}
        if caller == "robot":
            return {"pull", "push"}
        if caller in ("alice-pull-token", "admin"):
            return {"pull"}
        return set() if name == "acme/app" else {"pull"}  # outsiders never get the paid one
    return {"pull"}


NAMES = st.one_of(
    st.sampled_from(["acme/app", "acme/open", "acme/app/worker", "acme/new", "x/y", "other/app"]),
    st.from_regex(r"[a-z0-9]{1,4}(/[a-z0-9]{1,4}){0,2}", fullmatch=True),
    st.text(max_size=12),
)
ACTIONS = st.lists(
    st.sampled_from(["pull", "push", "delete", "*", "", "nope", "search", "PULL", " pull"]),
    max_size=4,
).map(",".join)
SCOPE = st.one_of(
    st.sampled_from(
        [
            "registry:catalog:search",
            "registry:catalog:pull",
            "registry:catalog:*",
            "repository:x/y:",
            "repository:x/y:nope",
            "repository:acme/app:pull,push",
            "repository(plugin):acme/open:pull",
            "repository:acme/app",
            "::",
            ":",
            "",
        ]
    ),
    st.builds(
        lambda t, n, a: f"{t}:{n}:{a}",
        st.sampled_from(["repository", "registry", "repository(x)", "Repository", "blob", ""]),
        NAMES,
        ACTIONS,
    ),
    st.text(max_size=40),
)
SCOPES = st.lists(st.one_of(SCOPE, st.lists(SCOPE, max_size=3).map(" ".join)), max_size=5)


def _asked(values: list[str]) -> dict[tuple[str, str], set[str]]:
    asked: dict[tuple[str, str], set[str]] = {}
    for value in values:
        for text in value.split():
            kind, _, rest = text.partition(":")
            name, _, actions = rest.rpartition(":")
            kind = kind.split("(")[0]
            wanted = {a.strip() for a in actions.split(",")}
            if "*" in wanted and kind == "repository":
                wanted |= {"pull", "push", "delete"}
            asked.setdefault((kind, name), set()).update(wanted)
    return asked


@HTTP
@given(
    caller=st.sampled_from(
        [
            "anonymous",
            "bob",
            "bob-api-token",
            "bob-pull-token",
            "alice",
            "alice-api-token",
            "alice-pull-token",
            "robot",
            "admin",
        ]
    ),
    values=SCOPES,
    method=st.sampled_from(["GET", "POST"]),
)
def test_token_never_fails_and_never_grants_more_than_asked_and_allowed(
    client: TestClient,
    world: dict[str, dict[str, str]],
    caller: str,
    values: list[str],
    method: str,
) -> None:
    params = [("service", SERVICE), *(("scope", v) for v in values)]
    if method == "GET":
        response = client.get("/token", params=params, headers=world[caller])
    else:
        header = world[caller].get("Authorization", "")
        form = dict(grant_type="password")
        if header:
            user, _, password = base64.b64decode(header.split()[1]).decode().partition(":")
            form.update(username=user, password=password)
        response = client.post("/token", params=params, data=form)
    assert response.status_code < 500, response.text
    if response.status_code == 401:
        assert response.headers.get("www-authenticate"), "a 401 without WWW-Authenticate"
        return
    if method == "POST" and caller == "anonymous":
        assert response.status_code == 401
        return
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    asked = _asked(values)
    for entry in tokens.decode_unverified(response.json()["token"])[1]["access"]:
        key = (entry["type"], entry["name"])
        assert key in asked, f"granted {key} nobody asked for"
        actions = set(entry["actions"])
        assert actions, "an entry with no actions"
        assert actions <= asked[key], f"{caller} got {actions} on {key}, asked {asked[key]}"
        bound = upper_bound(caller, *key)
        assert actions <= bound, f"{caller} got {actions} on {key}, at most {bound}"


@pytest.mark.parametrize(
    "scope",
    [
        "registry:catalog:search",
        "registry:catalog:pull",
        "repository:x/y:",
        "repository:x/y:nope",
        "repository:acme/app:",
        "repository:acme/app:nope,search",
        "repository:ACME/App:pull",
        "repository:acme/app",
        "nonsense",
    ],
)
@pytest.mark.parametrize("caller", ["anonymous", "bob", "alice", "admin"])
def test_scopes_asking_for_nothing_known_get_a_token_without_access(
    client: TestClient, world: dict[str, dict[str, str]], scope: str, caller: str
) -> None:
    response = client.get(
        "/token", params={"service": SERVICE, "scope": scope}, headers=world[caller]
    )
    assert response.status_code == 200, response.text
    assert tokens.decode_unverified(response.json()["token"])[1]["access"] == []


def test_unknown_actions_beside_known_ones_are_dropped(
    client: TestClient, world: dict[str, dict[str, str]]
) -> None:
    response = client.get(
        "/token",
        params={"service": SERVICE, "scope": "repository:acme/app:nope,pull,search"},
        headers=world["alice"],
    )
    assert tokens.decode_unverified(response.json()["token"])[1]["access"] == [
        {"type": "repository", "name": "acme/app", "actions": ["pull"]}
    ]


def test_every_401_carries_www_authenticate(
    client: TestClient, world: dict[str, dict[str, str]]
) -> None:
    refusals = [
        client.get("/token", params={"scope": "repository:acme/app:pull"}),  # login required
        client.get("/token", headers=basic("bob", "wrong password")),
        client.get("/token", params={"scope": "repository:acme/app:pull"}, headers=world["bob"]),
        client.get("/token", headers={"Authorization": "Basic !!"}),
        client.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x"}),
        client.post("/token", data={"grant_type": "client_credentials"}),
        client.post("/registry/events", content=b"{}"),
        client.get("/api/v1/me"),
        client.get("/api/v1/me", headers={"Authorization": "Bearer stp_nonsense"}),
    ]
    for response in refusals:
        assert response.status_code == 401, (response.request.url, response.text)
        assert response.headers.get("www-authenticate"), response.request.url
