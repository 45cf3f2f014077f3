"""Property: whatever sequence of changes the store goes through (publishing, suspending,
a paid tier offered or withdrawn, entitlements in every state, revocations, memberships,
visibility, token scopes), the
token endpoint never grants more than the rule allows, and grants pull exactly when the
rule says so. The rule is restated here from the models, independently of the SQL."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Membership, Organization
from store.catalog.models import Product, Tier
from store.catalog.periods import BillingKind
from store.db import utcnow
from store.licensing import entitlements
from store.licensing.models import Entitlement
from store.registry import hub, tokens
from store.registry.models import HubRepository
from tests.factories import make_account, make_org, make_product, paid_tier
from tests.registry.test_rule_parity import STATES, _set_state

REPOS = ("acme/app", "acme/app/worker", "acme/free", "acme/free/worker", "acme/tools")
SCOPE_SETS = (("pull",), ("push",), ("pull", "push"), ("api",))

operations = st.one_of(
    st.tuples(
        st.just("status"),
        st.sampled_from(("acme/app", "acme/free")),
        st.sampled_from(("draft", "published", "suspended")),
    ),
    st.tuples(
        st.just("entitle"),
        st.sampled_from(("acme/app", "acme/free")),
        st.sampled_from(list(STATES)[1:]),
    ),
    st.tuples(st.just("revoke_all"), st.none(), st.none()),
    st.tuples(st.just("paid"), st.sampled_from(("acme/app", "acme/free")), st.booleans()),
    st.tuples(
        st.just("visibility"), st.sampled_from(REPOS), st.sampled_from(("public", "private"))
    ),
    st.tuples(st.just("member"), st.none(), st.sampled_from((None, "viewer", "editor", "owner"))),
    st.tuples(st.just("admin"), st.none(), st.booleans()),
    st.tuples(st.just("token"), st.none(), st.sampled_from(SCOPE_SETS)),
)


def _usable(e: Entitlement, now: Any) -> bool:
    if e.status != "active" or e.starts_at > now:
        return False
    return (
        e.ends_at is None or e.ends_at > now or (e.grace_until is not None and e.grace_until > now)
    )


def _oracle(
    session: Session, account: Account | None, scopes: tuple[str, ...], repo: str
) -> set[str]:
    """What the rule allows, from the rows."""
    now = utcnow()
    parent = "/".join(repo.split("/")[:2])
    product = session.scalar(select(Product).where(Product.repository == parent))
    hub_row = session.scalar(select(HubRepository).where(HubRepository.name == repo))
    allowed: set[str] = set()
    tiers = [t for t in product.tiers if t.active] if product else []
    suspended = product is not None and product.status == "suspended"
    # A product sold through a paid active tier: the public mark opens none of its
    # repositories.
    sold = any(t.billing != "free" for t in tiers)
    marked = hub_row is not None and hub_row.visibility == "public"
    if (marked and not suspended and not sold) or (
        product is not None
        and product.status == "published"
        and tiers
        and all(t.billing == "free" and t.public for t in tiers)
    ):
        allowed.add("pull")
    if account is not None:
        role = session.scalar(
            select(Membership.role).where(
                Membership.account_id == account.id,
                Membership.organization_id == Organization.id,
                Organization.slug == repo.split("/")[0],
            )
        )
        if role is not None:
            allowed.add("pull")
            if role in ("editor", "owner"):
                allowed.add("push")
            if role == "owner":
                allowed.add("delete")
        if account.is_admin:
            allowed.add("pull")
        if product is not None and product.status in ("published", "draft"):
            held = session.scalars(
                select(Entitlement).where(
                    Entitlement.account_id == account.id, Entitlement.product_id == product.id
                )
            )
            if any(_usable(e, now) for e in held):
                allowed.add("pull")
        # The token's scopes: pull needs pull or push, push and delete need push.
        allowed = {
            a
            for a in allowed
            if (a == "pull" and {"pull", "push"} & set(scopes))
            or (a != "pull" and "push" in scopes)
        }
    return allowed


def _access(client: TestClient, headers: dict[str, str], repo: str) -> set[str]:
    response = client.get(
        "/token",
        params={"service": "store-registry", "scope": f"repository:{repo}:pull,push,delete"},
        headers=headers,
    )
    if response.status_code != 200:
        assert response.status_code == 401, response.text
        return set()
    granted: set[str] = set()
    for entry in tokens.decode_unverified(response.json()["token"])[1]["access"]:
        assert entry["name"] == repo
        granted |= set(entry["actions"])
    return granted


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(operations, min_size=1, max_size=8))
# Always tried: an old public mark on a paid product's sub-repository, and on a free
# product's repository before a paid tier is offered on it.
@example(steps=[("visibility", "acme/app/worker", "public")])
@example(steps=[("visibility", "acme/free", "public"), ("paid", "acme/free", True)])
def test_no_sequence_of_changes_grants_more_than_the_rule(
    client: TestClient, session: Session, steps: list[tuple[str, Any, Any]]
) -> None:
    nested = session.begin_nested()
    try:
        owner = make_account(session)
        customer = make_account(session)
        acme = make_org(session, owner, "acme")
        admin = make_account(session, is_admin=True)
        products = {
            "acme/app": make_product(session, acme, owner, "app", tiers=[paid_tier()]),
            "acme/free": make_product(
                session,
                acme,
                owner,
                "free",
                tiers=[{"slug": "free", "billing": "free", "public": True}],
            ),
        }
        for name in REPOS:
            hub.ensure_repository(session, name)
        scopes: tuple[str, ...] = ("pull", "push")
        secret = accounts.create_token(
            session, kind="personal", name="t", scopes=list(scopes), created_by=customer
        ).secret
        for op, target, value in steps:
            if op == "status":
                products[target].status = value
            elif op == "entitle":
                product = products[target]
                tier = product.tiers[0]
                held = entitlements.create_entitlement(
                    session, tier=tier, source="grant", account=customer
                )
                _set_state(session, held, value)
            elif op == "paid":
                product = products[target]
                extra = next((t for t in product.tiers if t.slug == "extra"), None)
                if extra is None:
                    extra = Tier(
                        product=product,
                        slug="extra",
                        name="Extra",
                        billing=BillingKind.MONTH,
                        amount_minor=900,
                        currency="usd",
                    )
                    session.add(extra)
                extra.active = value
            elif op == "revoke_all":
                for e in session.scalars(
                    select(Entitlement).where(Entitlement.account_id == customer.id)
                ):
                    e.status, e.revoked_at = "revoked", utcnow()
            elif op == "visibility":
                hub.set_visibility(session, name=target, visibility=value)
            elif op == "member":
                current = session.scalar(
                    select(Membership).where(
                        Membership.account_id == customer.id, Membership.organization_id == acme.id
                    )
                )
                if current is not None:
                    session.delete(current)
                    session.flush()
                if value is not None:
                    session.add(
                        Membership(organization_id=acme.id, account_id=customer.id, role=value)
                    )
            elif op == "admin":
                customer.is_admin = value
            elif op == "token":
                scopes = value
                secret = accounts.create_token(
                    session, kind="personal", name="t", scopes=list(scopes), created_by=customer
                ).secret
            session.flush()
            for name in products:
                hub.refresh_visibility(session, name)
        session.flush()
        auth = {
            "Authorization": "Basic "
            + base64.b64encode(f"{customer.username}:{secret}".encode()).decode()
        }
        for repo in REPOS:
            got = _access(client, auth, repo)
            want = _oracle(session, customer, scopes, repo)
            assert got <= want, (repo, steps, got, want)
            assert ("pull" in got) == ("pull" in want), (repo, steps, got, want)
            anonymous = _access(client, {}, repo)
            assert anonymous == (_oracle(session, None, (), repo) & {"pull"}), (repo, steps)
        del admin
    finally:
        nested.rollback()
