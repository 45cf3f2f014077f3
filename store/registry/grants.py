"""Who may do what on the registry: the grant is what was asked, intersected with what the
caller is allowed, never more.

``decide`` is pure (table-tested); ``load_facts`` reads what it needs for one repository in
a single indexed query (the JSON API's "why can't I pull?"). The token endpoint reads the
same facts with :mod:`store.registry.lookup`, joined with the credential in one statement.

Rules:
- members of the namespace's organisation: viewer → pull; editor → pull, push; owner →
  pull, push, delete (limited by the scopes of the token used, if any);
- robot tokens of the namespace's organisation: pull with ``pull`` or ``push`` scope, push
  with ``push`` (push needs pull on the registry);
- anyone, anonymous included: pull on public repositories (no product, or a published
  product whose active tiers are all free and marked public);
- customers: pull on a product's repository while they (or one of their organisations, or
  the organisation of the robot token used) hold a usable entitlement and the product is
  published or was unpublished (subscribers keep access to the end of the paid period, and
  buyers of perpetual licenses keep theirs); never while it is suspended;
- administrators: pull everywhere; ``registry:catalog:*`` only for administrators and the
  store's own sync credential.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from store.registry.scopes import Scope

PUSHERS = ("editor", "owner")
# Product statuses under which entitlement holders may pull (not "suspended").
ENTITLED_STATUSES = ("published", "draft")


@dataclass(frozen=True)
class Principal:
    """The caller of the token endpoint, as resolved from its credentials."""

    kind: str  # anonymous | account | robot | sync | license (and later kinds)
    subject: str  # the JWT "sub": shown in registry logs and as the actor of events
    account_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None  # a robot token's organisation
    is_admin: bool = False
    # Registry scopes of the token used (pull/push); None = not limited (a password).
    token_scopes: frozenset[str] | None = None
    token_id: uuid.UUID | None = None
    # Repositories a credential is limited to (e.g. a license key); None = no such limit.
    repositories: frozenset[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal(kind="anonymous", subject="")


@dataclass(frozen=True)
class RepoFacts:
    """What the database says about one repository, from the principal's point of view."""

    name: str
    org_id: uuid.UUID | None = None  # the organisation owning the namespace, if any
    role: str | None = None  # the principal's role in that organisation
    product_id: uuid.UUID | None = None
    product_status: str | None = None
    product_public: bool = False  # active tiers all free and public
    entitled: bool = False  # a usable entitlement held by the principal

    @property
    def public(self) -> bool:
        if self.product_id is None:
            return True
        return self.product_status == "published" and self.product_public


@dataclass(frozen=True)
class Denied:
    scope: Scope
    actions: tuple[str, ...]
    code: str  # no_access (explained further for products), push_denied, catalog_denied, ...
    message: str
    product_id: uuid.UUID | None = None


@dataclass
class Decision:
    granted: list[Scope] = field(default_factory=list)
    denied: list[Denied] = field(default_factory=list)

    def access(self) -> list[dict[str, Any]]:
        """The JWT ``access`` claim."""
        return [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in self.granted]


def _token_allows(principal: Principal, action: str) -> bool:
    scopes = principal.token_scopes
    if scopes is None:
        return True
    if action == "pull":
        return "pull" in scopes or "push" in scopes
    return "push" in scopes  # push and delete need a token that may push


def allowed_repository_actions(principal: Principal, facts: RepoFacts) -> set[str]:
    """Every action the principal may perform on the repository."""
    allowed: set[str] = set()
    if principal.kind == "account" and facts.role is not None:
        allowed.add("pull")
        if facts.role in PUSHERS:
            allowed.add("push")
        if facts.role == "owner":
            allowed.add("delete")
    elif principal.kind == "robot" and facts.org_id and facts.org_id == principal.organization_id:
        allowed.update(("pull", "push"))
    if principal.is_admin or principal.kind == "sync":
        allowed.add("pull")
    if facts.public or (facts.entitled and facts.product_status in ENTITLED_STATUSES):
        allowed.add("pull")
    if principal.repositories is not None:
        # A credential limited to some repositories (a license): pull on those while the
        # product is not suspended, and on public repositories as anyone may; nothing else.
        covered = facts.name in principal.repositories and facts.product_status in ENTITLED_STATUSES
        allowed = {"pull"} if covered or facts.public else set()
    return {a for a in allowed if _token_allows(principal, a)}


def decide(
    principal: Principal, scopes: tuple[Scope, ...], facts: dict[str, RepoFacts]
) -> Decision:
    """Grant the intersection of what was asked and what is allowed, scope by scope."""
    decision = Decision()
    for scope in scopes:
        if not scope.actions:
            # Nothing (known) asked for: the token carries no access for it, as the
            # distribution token specification says; neither a grant nor a refusal.
            continue
        if scope.type == "registry":
            if "*" in scope.actions and (principal.is_admin or principal.kind == "sync"):
                decision.granted.append(scope)
            elif scope.actions:
                decision.denied.append(
                    Denied(
                        scope,
                        scope.actions,
                        "catalog_denied",
                        "Only administrators list the registry's catalog.",
                    )
                )
            continue
        repo = facts.get(scope.name) or RepoFacts(name=scope.name)
        allowed = allowed_repository_actions(principal, repo)
        wanted = ("pull", "push", "delete") if "*" in scope.actions else scope.actions
        granted = tuple(a for a in wanted if a in allowed)
        missing = tuple(a for a in wanted if a not in allowed)
        if granted:
            decision.granted.append(Scope(scope.type, scope.name, granted))
        if missing:
            decision.denied.append(_denial(principal, scope, repo, missing))
    return decision


def _denial(
    principal: Principal, scope: Scope, repo: RepoFacts, missing: tuple[str, ...]
) -> Denied:
    if (
        "pull" in missing
        and principal.token_scopes is not None
        and not _token_allows(principal, "pull")
    ):
        return Denied(scope, missing, "token_scope", "The token used has no 'pull' scope.")
    if "pull" in missing and repo.product_id is not None:
        # Explained with the customer's entitlement by the caller (why, and where to get it).
        return Denied(scope, missing, "no_access", f"No access to {scope.name}.", repo.product_id)
    if "pull" in missing:
        return Denied(scope, missing, "no_access", f"No access to {scope.name}.")
    namespace = scope.namespace or scope.name
    if principal.token_scopes is not None and not _token_allows(principal, "push"):
        message = "The token used has no 'push' scope."
    elif "push" in missing:
        message = (
            f"Only editors and owners of the '{namespace}' organization, and its robot "
            f"tokens, push to {scope.name}."
        )
    else:
        message = f"Only owners of the '{namespace}' organization may delete in {scope.name}."
    return Denied(scope, missing, "push_denied", message)


# --- facts: one indexed query per repository --------------------------------------------


def load_facts(
    conn: Connection, principal: Principal, names: list[str], now: datetime
) -> dict[str, RepoFacts]:
    """The facts of each repository for ``principal``, on a SQLAlchemy connection. The
    statement is the token endpoint's (``store.registry.lookup``): one set of rules."""
    from store.registry import lookup

    return lookup.facts_on(conn, principal, names, now)
