"""JSON API (under /api/v1): "why can't I pull X?" and pull history for publishers."""

from __future__ import annotations

from fastapi import APIRouter, Query

from store.accounts import service as accounts
from store.accounts.caller import Caller, CurrentAccount
from store.catalog import service as catalog
from store.db import utcnow
from store.deps import DbSession, SettingsDep
from store.errors import Forbidden
from store.licensing.schemas import AccessOut
from store.registry import explain, grants, hub, visibility
from store.registry.schemas import (
    AccessCheckOut,
    PullDay,
    PullHistoryOut,
    Refusal,
    ScopeGrant,
    VisibilityIn,
    VisibilityOut,
)
from store.registry.scopes import parse_scopes

router = APIRouter(tags=["registry"])


@router.get("/registry/access", response_model=AccessCheckOut)
def check_access(
    caller: Caller,
    session: DbSession,
    settings: SettingsDep,
    repository: list[str] = Query(default=[], description="ORG/NAME; pull is checked"),
    scope: list[str] = Query(
        default=[], description="Registry scopes, e.g. repository:acme/app:pull,push"
    ),
) -> AccessCheckOut:
    """Why can't I pull (or push) X? The token endpoint's decision for the caller (anonymous
    without a token), with the reason for each refusal and where to get access."""
    principal = grants.ANONYMOUS
    if caller.account is not None:
        principal = grants.Principal(
            kind="account",
            subject=caller.account.username,
            account_id=caller.account.id,
            is_admin=caller.account.is_admin,
        )
    parsed = parse_scopes([*scope, *(f"repository:{r.strip().lower()}:pull" for r in repository)])
    names = [s.name for s in parsed.scopes if s.type == "repository"]
    facts = grants.load_facts(session.connection(), principal, names, utcnow())
    decision = grants.decide(principal, parsed.scopes, facts)
    refused = [
        explain.explain(session, settings, principal, d, facts.get(d.scope.name))
        for d in decision.denied
    ]
    return AccessCheckOut(
        subject=principal.subject,
        granted=[
            ScopeGrant(type=s.type, name=s.name, actions=list(s.actions)) for s in decision.granted
        ],
        refused=[Refusal(**r) for r in refused],
        invalid=[f"{text}: {why}" for text, why in parsed.invalid],
    )


@router.get("/products/{org}/{name}/pulls", response_model=PullHistoryOut)
def pull_history(
    org: str,
    name: str,
    caller: Caller,
    session: DbSession,
    days: int = Query(default=30, ge=1, le=366),
) -> PullHistoryOut:
    """Daily manifest pulls of the product's repository (members of the publisher only)."""
    product = catalog.get_visible_product(session, f"{org}/{name}", caller.account)
    if not accounts.has_role(session, caller.account, product.organization, "viewer"):
        raise Forbidden("Only members of the publishing organization see pull history")
    history = hub.pull_history(session, name=product.repository, days=days)
    return PullHistoryOut(
        repository=history.repository,
        total=history.total,
        days=[PullDay(day=d, count=c) for d, c in history.days],
    )


@router.get("/repositories/{name:path}/visibility", response_model=VisibilityOut)
def get_visibility(name: str, caller: Caller, session: DbSession) -> VisibilityOut:
    """Whether a repository is private or public (members of its namespace; 404 for others)."""
    view = visibility.get_visibility(session, account=caller.account, name=name)
    return VisibilityOut(**view.__dict__)


@router.put("/repositories/{name:path}/visibility", response_model=VisibilityOut)
def set_visibility(
    name: str, body: VisibilityIn, account: CurrentAccount, session: DbSession
) -> VisibilityOut:
    """Mark a repository public (anyone may pull it) or private (owners of its namespace)."""
    view = visibility.set_visibility(session, actor=account, name=name, visibility=body.visibility)
    return VisibilityOut(**view.__dict__)


@router.get("/products/{org}/{name}/access", response_model=AccessOut, tags=["registry"])
def access(
    org: str, name: str, caller: Caller, session: DbSession, settings: SettingsDep
) -> AccessOut:
    """Why can (or can't) the caller pull this product's repository, and where to get access."""
    product = catalog.get_visible_product(session, f"{org}/{name}", caller.account)
    decision = explain.access_for(session, caller.account, product)
    return AccessOut(
        repository=product.repository,
        allowed=decision.allowed,
        reason=decision.reason,
        message=decision.message,
        product_url=f"{settings.public_url}/products/{product.repository}",
        entitlement_id=decision.entitlement.id if decision.entitlement else None,
    )
