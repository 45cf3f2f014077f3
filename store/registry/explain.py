"""Why a pull or push was refused, and where to get access: the same words for the token
endpoint's 401 (which skopeo and docker print), the JSON API and the product page. The
reasons come from the rule itself (:func:`store.registry.grants.refusal`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from store.accounts.models import Account, Membership
from store.catalog.models import Product
from store.config import Settings
from store.db import read_only_session, utcnow
from store.licensing.entitlements import held_by_account
from store.licensing.models import Entitlement
from store.registry import grants
from store.registry.grants import Denied, Principal, RepoFacts


def product_url(settings: Settings, repository: str) -> str:
    return f"{settings.public_url}/products/{repository}"


def held_state(
    session: Session, principal: Principal, product_id: uuid.UUID, now: datetime
) -> grants.Held | None:
    """The effective status of the latest entitlement to the product that the principal
    (an account, its organizations, or a robot's organization) holds; None without one."""
    if principal.kind == "account" and principal.account_id is not None:
        orgs = select(Membership.organization_id).where(
            Membership.account_id == principal.account_id
        )
        owner = or_(
            Entitlement.account_id == principal.account_id, Entitlement.organization_id.in_(orgs)
        )
    elif principal.kind == "robot" and principal.organization_id is not None:
        owner = Entitlement.organization_id == principal.organization_id
    else:
        return None
    held = list(
        session.scalars(
            select(Entitlement)
            .where(Entitlement.product_id == product_id, owner)
            .order_by(Entitlement.created_at.desc())
        )
    )
    if not held:
        return None
    usable = [e for e in held if e.is_usable(now)]
    latest = usable[0] if usable else held[0]
    return grants.Held(latest.effective_status(now), latest.reason)


def explain(
    session: Session,
    settings: Settings,
    principal: Principal,
    denied: Denied,
    facts: RepoFacts | None = None,
) -> dict[str, Any]:
    """One refusal as ``{repository, actions, reason, message, product_url}``."""
    out: dict[str, Any] = {
        "repository": denied.scope.name,
        "actions": list(denied.actions),
        "reason": denied.code,
        "message": denied.message,
        "product_url": None,
    }
    if denied.product_id is None:
        return out
    product = session.get(Product, denied.product_id)
    if product is None:
        return out
    if facts is None:
        facts = grants.load_facts(session.connection(), principal, [denied.scope.name], utcnow())[
            denied.scope.name
        ]
    held = held_state(session, principal, product.id, utcnow())
    reason, message, informative = grants.refusal(principal, facts, held)
    out["reason"], out["message"] = reason, message
    if not informative:
        return out
    url = product_url(settings, product.repository)
    out["product_url"] = url if facts.listed else None
    if facts.listed:
        out["message"] = f"{message.rstrip('.')}; get access at {url}"
    return out


def explain_denials(
    factory: sessionmaker[Session],
    settings: Settings,
    principal: Principal,
    denied: list[Denied],
    facts: dict[str, RepoFacts] | None = None,
) -> list[dict[str, Any]]:
    """Every refusal explained; refusals about a product (the informative ones) first."""
    facts = facts or {}
    with read_only_session(factory) as session:
        reasons = [
            explain(session, settings, principal, d, facts.get(d.scope.name)) for d in denied
        ]
    return sorted(reasons, key=lambda r: r["product_url"] is None)


@dataclass(frozen=True)
class Access:
    """Whether an account may pull a product, and if not, why and where to get access."""

    allowed: bool
    # Stable codes: entitled, public, publisher, no_license, expired, revoked, suspended,
    # product_suspended.
    reason: str
    message: str
    entitlement: Entitlement | None = None


ALLOWED_MESSAGES = {
    "publisher": "You are a member of the publishing organization.",
    "public": "{repo} is free and public.",
    "entitled": "You hold an active entitlement.",
    "admin": "You are an administrator.",
}


def access_for(session: Session, account: Account | None, product: Product) -> Access:
    """The "may pull" rule (store.registry.grants) for this account and the product's
    repository, with its reason: the token endpoint's decision, explained."""
    now = utcnow()
    principal = grants.ANONYMOUS
    if account is not None:
        principal = grants.Principal(
            kind="account",
            subject=account.username,
            account_id=account.id,
            is_admin=account.is_admin,
        )
    repo = product.repository
    facts = grants.load_facts(session.connection(), principal, [repo], now)[repo]
    reason = grants.pull_reason(principal, facts)
    if reason is not None:
        held = None
        if reason == "entitled" and account is not None:
            held = next(
                (e for e in held_by_account(session, account, product) if e.is_usable(now)), None
            )
        message = ALLOWED_MESSAGES.get(reason, "You may pull {repo}.").format(repo=repo)
        return Access(True, reason, message, held)
    state = held_state(session, principal, product.id, now)
    code, message, _ = grants.refusal(principal, facts, state)
    latest = None
    if account is not None and state is not None:
        latest = next(iter(held_by_account(session, account, product)), None)
    return Access(False, code, message, latest)
