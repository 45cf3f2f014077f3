"""Property-based tests (hypothesis): arbitrary input never yields an unexpected exception,
a 5xx, or a grant nobody asked for or may have."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.idempotency import ProcessedEvent
from store.licensing import verify
from store.registry import grants
from store.registry.grants import Principal, RepoFacts
from store.registry.scopes import REPOSITORY_ACTIONS, parse_scopes, valid_repository
from store.search import query as search_query
from tests.billing.helpers import WEBHOOK_SECRET, make_event, sign

FAST = settings(max_examples=300, deadline=None)
# HTTP properties reuse one app and one rolled-back transaction across examples: that is
# intended (state piles up like it would under real traffic).
HTTP = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- scopes and grants -----------------------------------------------------------------------

ACME, OTHER = uuid.UUID(int=1), uuid.UUID(int=2)
NAMES = st.one_of(
    st.sampled_from(["acme/app", "acme/tools/cli", "other/app", "app", "catalog", "acme"]),
    st.from_regex(r"[a-z0-9]{1,5}(/[a-z0-9]{1,5}){0,2}", fullmatch=True),
    st.text(max_size=20),
)
ACTIONS = st.lists(
    st.sampled_from(["pull", "push", "delete", "*", "", "PUSH", "admin", " push", "pull "]),
    max_size=5,
).map(",".join)
SCOPE_TEXT = st.one_of(
    st.builds(
        lambda t, n, a: f"{t}:{n}:{a}",
        st.sampled_from(["repository", "registry", "repository(plugin)", "Repository", "x"]),
        NAMES,
        ACTIONS,
    ),
    st.text(max_size=60),
)
SCOPE_VALUES = st.lists(
    st.one_of(SCOPE_TEXT, st.lists(SCOPE_TEXT, max_size=3).map(" ".join)), max_size=6
)


@FAST
@given(SCOPE_VALUES)
def test_scope_parser_accepts_anything_and_keeps_only_valid_scopes(values: list[str]) -> None:
    parsed = parse_scopes(values)
    for scope in parsed.scopes:
        if scope.type == "repository":
            assert valid_repository(scope.name)
            assert set(scope.actions) <= {*REPOSITORY_ACTIONS, "*"}
        else:
            assert (scope.type, scope.name) == ("registry", "catalog")
            assert set(scope.actions) <= {"*"}
    keys = [(s.type, s.name) for s in parsed.scopes]
    assert len(keys) == len(set(keys))  # merged per resource


PRINCIPALS = st.builds(
    lambda kind, admin, scopes, org, repos: Principal(
        kind=kind,
        subject=kind,
        account_id=uuid.UUID(int=9) if kind == "account" else None,
        organization_id=org if kind == "robot" else None,
        is_admin=admin and kind == "account",
        token_scopes=scopes if kind in ("account", "robot", "license") else None,
        repositories=repos if kind == "license" else None,
    ),
    st.sampled_from(["anonymous", "account", "robot", "license", "sync"]),
    st.booleans(),
    st.one_of(st.none(), st.frozensets(st.sampled_from(["pull", "push", "api"]))),
    st.sampled_from([ACME, OTHER]),
    st.frozensets(st.sampled_from(["acme/app", "other/app", "app"])),
)


def _facts(data: st.DataObject, names: list[str], role: str | None) -> dict[str, RepoFacts]:
    """What load_facts would say: the namespace "acme" belongs to organization ACME and
    "other" to OTHER (load_facts looks the organization up by slug), no other namespace has
    one; the principal (a member of acme with ``role``) has a role under acme/ only;
    everything else about products is arbitrary."""
    facts = {}
    for name in names:
        namespace = name.split("/")[0] if "/" in name else None
        facts[name] = RepoFacts(
            name=name,
            org_id={"acme": ACME, "other": OTHER}.get(namespace or ""),
            role=role if namespace == "acme" else None,
            product_id=data.draw(st.sampled_from([None, uuid.UUID(int=5)])),
            product_status=data.draw(st.sampled_from([None, "draft", "published", "suspended"])),
            product_public=data.draw(st.booleans()),
            entitled=data.draw(st.booleans()),
        )
    return facts


@FAST
@given(SCOPE_VALUES, PRINCIPALS, st.sampled_from([None, "viewer", "editor", "owner"]), st.data())
def test_grants_are_asked_for_and_push_stays_in_the_principals_namespace(
    values: list[str], principal: Principal, role: str | None, data: st.DataObject
) -> None:
    parsed = parse_scopes(values)
    names = [s.name for s in parsed.scopes if s.type == "repository"]
    role = role if principal.kind == "account" else None
    decision = grants.decide(principal, parsed.scopes, _facts(data, names, role))
    asked = {(s.type, s.name): set(s.actions) for s in parsed.scopes}
    for granted in decision.granted:
        wanted = asked[(granted.type, granted.name)]
        if "*" in wanted:
            wanted = {*wanted, *REPOSITORY_ACTIONS}
        assert set(granted.actions) <= wanted, "granted an action not asked for"
        if granted.type == "registry":
            assert principal.is_admin or principal.kind == "sync"
            continue
        writes = set(granted.actions) & {"push", "delete"}
        if writes:
            assert principal.kind in ("account", "robot")
            # The account is a member of acme only; a robot belongs to its own organization.
            own = (
                "other"
                if principal.kind == "robot" and principal.organization_id == OTHER
                else "acme"
            )
            assert granted.name.startswith(f"{own}/"), "push outside the principal's namespace"
            if principal.kind == "robot":
                assert "delete" not in writes
            else:
                assert role in grants.PUSHERS
                assert "delete" not in writes or role == "owner"
            if principal.token_scopes is not None:
                assert "push" in principal.token_scopes
        if principal.kind in ("anonymous", "license", "sync"):
            assert set(granted.actions) == {"pull"}
    # Nothing is both granted and denied, and every ask is answered.
    for denied in decision.denied:
        match = [g for g in decision.granted if g.name == denied.scope.name]
        assert not match or not set(match[0].actions) & set(denied.actions)


# --- the search query language ----------------------------------------------------------------

QUERY_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(['"', "-", "OR", "*", "red*", "a", "acme/redis-ha", " ", "\x00", "ü", "_"]),
        max_size=40,
    ).map("".join),
)


@FAST
@given(QUERY_TEXT, st.booleans())
def test_search_parser_raises_only_its_domain_error(text: str, as_you_type: bool) -> None:
    try:
        query = search_query.parse(text, as_you_type=as_you_type)
    except search_query.BadQuery:
        return
    for tier in search_query.TIER_FIELDS:
        rendered = search_query.fts5_text(query, tier)
        assert rendered is None or isinstance(rendered, str)
    search_query.tsquery_text(query, "AB")
    search_query.tsquery_excluded(query)
    for phrase in [p for group in query.groups for p in group] + query.excluded:
        for token in phrase.tokens:
            assert token and all(ch.isalnum() for ch in token), token


@HTTP
@given(q=QUERY_TEXT)
def test_search_endpoints_never_fail_on_a_query(client: TestClient, q: str) -> None:
    for path in ("/api/v1/search", "/v1/search"):
        response = client.get(path, params={"q": q})
        assert response.status_code in (200, 400, 422), (path, q, response.text)


# --- the license verifier ----------------------------------------------------------------------

KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_KEY = ed25519.Ed25519PrivateKey.generate()
NOW = 1_900_000_000
VERDICTS = {v for k, v in vars(verify).items() if k.startswith("VERDICT_")}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(key: ed25519.Ed25519PrivateKey, kid: str) -> dict[str, str]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw), "kid": kid, "alg": "EdDSA"}


VERIFIER = verify.Verifier({"keys": [_jwk(KEY, "lic-a")]})


def _sign(key: ed25519.Ed25519PrivateKey, header: Any, payload: Any) -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(payload).encode())
    return f"{head}.{body}.{_b64(key.sign(f'{head}.{body}'.encode()))}"


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
VALID_CLAIMS: dict[str, Any] = {
    "v": 1,
    "lid": "4b0d6c1e-0000-4000-8000-000000000001",
    "iss": "https://store.example",
    "sub": {"type": "account", "id": "a1"},
    "product": {"id": "p1", "repository": "acme/app"},
    "tier": {"slug": "pro"},
    "iat": NOW - 10,
    "nbf": NOW - 10,
    "exp": NOW + 1000,
}
CLAIMS = st.builds(
    lambda changes, drop: {
        **{k: v for k, v in VALID_CLAIMS.items() if k not in drop},
        **changes,
    },
    st.dictionaries(st.sampled_from([*VALID_CLAIMS, "grace_until", "x"]), JSON_VALUES, max_size=3),
    st.sets(st.sampled_from(list(VALID_CLAIMS)), max_size=2),
)
HEADERS = st.one_of(
    st.just({"alg": "EdDSA", "typ": verify.LICENSE_TYP, "kid": "lic-a"}),
    st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "x"]), JSON_VALUES, max_size=4),
)


@FAST
@given(
    st.one_of(
        st.text(max_size=200), st.from_regex(r"[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*")
    )
)
def test_verifier_gives_a_verdict_for_any_text(token: str) -> None:
    result = VERIFIER.verify(token, now=NOW)
    assert result.verdict in VERDICTS and not result.usable


@FAST
@given(HEADERS, CLAIMS, st.booleans())
def test_verifier_gives_a_verdict_for_any_signed_document(
    header: Any, payload: Any, foreign_key: bool
) -> None:
    token = _sign(OTHER_KEY if foreign_key else KEY, header, payload)
    result = VERIFIER.verify(token, now=NOW)
    assert result.verdict in VERDICTS
    if result.usable:  # only a well-formed license signed by the trusted key is usable
        assert not foreign_key
        assert header == {"alg": "EdDSA", "typ": verify.LICENSE_TYP, "kid": "lic-a"}


@FAST
@given(st.integers(min_value=0), st.sampled_from("AQgw_-x"))
def test_a_changed_character_never_verifies(position: int, replacement: str) -> None:
    token = _sign(KEY, {"alg": "EdDSA", "typ": verify.LICENSE_TYP, "kid": "lic-a"}, VALID_CLAIMS)
    assert VERIFIER.verify(token, now=NOW).valid
    index = position % len(token)
    changed = token[:index] + replacement + token[index + 1 :]
    if changed != token:
        result = VERIFIER.verify(changed, now=NOW)
        # base64url's last character may carry unused bits: same bytes, same verdict.
        same = _same_bytes(token, changed)
        assert result.valid == same, (index, replacement, result)


def _same_bytes(a: str, b: str) -> bool:
    def decode(token: str) -> list[bytes | None]:
        out: list[bytes | None] = []
        for part in token.split("."):
            try:
                out.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            except ValueError:
                out.append(None)
        return out

    return decode(a) == decode(b) and a.count(".") == b.count(".")


# --- webhook and notification intake ----------------------------------------------------------


@pytest.fixture
def webhook_app(app: FastAPI, settings: Any) -> FastAPI:
    from store.billing.runtime import build_billing
    from tests.billing.helpers import billing_settings

    app.state.billing = build_billing(billing_settings(), settings)
    return app


def _processed(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0)


@HTTP
@given(
    body=st.one_of(st.binary(max_size=300), JSON_VALUES.map(json.dumps).map(str.encode)),
    signature=st.one_of(st.none(), st.text(max_size=80), st.just("t=1,v1=00")),
)
def test_webhook_with_a_bad_signature_is_refused_without_effect(
    webhook_app: FastAPI, client: TestClient, session: Session, body: bytes, signature: str | None
) -> None:
    before = _processed(session)
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature.encode("ascii", "replace").decode()
    response = client.post("/billing/stripe/webhook", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert _processed(session) == before


EVENT_TYPES = st.sampled_from(
    [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "checkout.session.completed",
        "something.else",
    ]
)
OBJECTS = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "object",
            "amount",
            "currency",
            "status",
            "metadata",
            "subscription",
            "customer",
            "payment_intent",
            "current_period_end",
            "cancel_at_period_end",
            "lines",
            "items",
        ]
    ),
    st.one_of(
        JSON_VALUES,
        st.builds(
            lambda oid: {"order_id": oid}, st.one_of(st.text(max_size=40), st.uuids().map(str))
        ),
    ),
    max_size=8,
)


@HTTP
@given(event_type=EVENT_TYPES, obj=OBJECTS, created=st.one_of(st.none(), JSON_VALUES))
def test_signed_webhooks_of_any_shape_never_fail(
    webhook_app: FastAPI, client: TestClient, event_type: str, obj: dict[str, Any], created: Any
) -> None:
    event = make_event(event_type, obj)
    event["created"] = created
    body = json.dumps(event)
    response = client.post(
        "/billing/stripe/webhook",
        content=body.encode(),
        headers={
            "Stripe-Signature": sign(body, WEBHOOK_SECRET),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code in (200, 400) or (
        response.status_code == 503 and response.json()["error"] == "retry_later"
    ), response.text


REGISTRY_EVENTS = st.lists(
    st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries(
            {"id": st.one_of(st.uuids().map(str), JSON_VALUES)},
            optional={
                "action": st.sampled_from(["push", "pull", "delete", "mount", 3]),
                "timestamp": st.one_of(st.just("2026-11-28T12:00:00Z"), JSON_VALUES),
                "target": st.one_of(
                    JSON_VALUES,
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "repository": st.one_of(NAMES, JSON_VALUES),
                            "tag": st.one_of(st.text(max_size=10), JSON_VALUES),
                            "digest": st.one_of(st.just("sha256:" + "a" * 64), JSON_VALUES),
                            "mediaType": st.one_of(
                                st.just("application/vnd.oci.image.manifest.v1+json"),
                                JSON_VALUES,
                            ),
                            "size": JSON_VALUES,
                        },
                    ),
                ),
                "request": JSON_VALUES,
                "actor": JSON_VALUES,
            },
        ),
    ),
    max_size=4,
)


@HTTP
@given(envelope=st.one_of(JSON_VALUES, st.builds(lambda e: {"events": e}, REGISTRY_EVENTS)))
def test_registry_notifications_of_any_shape_never_fail(
    app: FastAPI, client: TestClient, envelope: Any
) -> None:
    secret = app.state.settings.resolved_notify_secret
    response = client.post(
        "/registry/events",
        content=json.dumps(envelope).encode(),
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        },
    )
    assert response.status_code in (200, 400), response.text


@HTTP
@given(body=st.binary(max_size=200), auth=st.text(max_size=40))
def test_registry_notifications_need_the_secret(
    client: TestClient, session: Session, body: bytes, auth: str
) -> None:
    before = _processed(session)
    response = client.post(
        "/registry/events",
        content=body,
        headers={"Authorization": auth.encode("ascii", "replace").decode()},
    )
    assert response.status_code == 401
    assert _processed(session) == before
