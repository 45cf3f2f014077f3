"""Who may do what on the registry: the grant is what was asked, intersected with what the
caller is allowed, never more. This module is the one "may pull" rule: the token endpoint,
the JSON API's "why can't I pull?", the product page's access box and search visibility all
decide with :func:`allowed_repository_actions` over the same :class:`RepoFacts` (read by
:mod:`store.registry.lookup` in one statement), and explain a refusal with :func:`refusal`.

``decide`` is pure (table-tested); ``load_facts`` reads what it needs for one repository in
a single indexed query.

A repository belongs to the product whose repository is its first two path components: the
product's own repository (``acme/app``) and its sub-repositories (``acme/app/worker``)
follow the product. Rules:
- members of the namespace's organization: viewer → pull; editor → pull, push; owner →
  pull, push, delete (limited by the scopes of the token used, if any);
- a personal namespace (``<username>/``): its user → pull, push, delete; the accounts given
  a permission on one of its repositories (collaborators): read → pull; write → pull,
  push; admin → pull, push, delete (limited by the token's scopes the same way);
- robot tokens of the namespace's organization: pull with ``pull`` or ``push`` scope, push
  with ``push`` (push needs pull on the registry);
- anyone, anonymous included: pull on public repositories only: those of a published
  product whose active tiers are all free and marked public, and those the namespace's
  owner marked public, unless they belong to a suspended product or to a product sold
  through a paid active tier (the mark never gives a paid product's images away, even one
  set before the product or its paid tier existed). Everything else is private (a
  repository pushed before its listing exists, a draft's or a deleted product's images, a
  paid product's sub-repositories);
- customers: pull on a product's repositories while they (or one of their organizations,
  or the organization of the robot token used) hold a usable entitlement
  (:mod:`store.licensing.usable`) and the product is published or was unpublished
  (subscribers keep access to the end of the paid period, and buyers of perpetual licenses
  keep theirs); never while it is suspended. A license key: pull on its product's
  repositories on the same terms;
- a running build's credential (``store.builds``): pull and push on the one repository
  it builds, and pull where anyone may; nothing else;
- administrators: pull everywhere; ``registry:catalog:*`` only for administrators and the
  store's own sync credential.

Whoever may not see a repository gets the answer a repository that does not exist gets:
a draft, a suspended product or an unlisted repository is never named as such to them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from store.registry.scopes import Scope

# Roles (an organization's, or in a personal namespace ``owner`` for its user and the
# collaborator's permission for others) that push, and that delete.
PUSHERS = ("editor", "owner", "write", "admin")
DELETERS = ("owner", "admin")
# Product statuses under which entitlement holders may pull (not "suspended").
ENTITLED_STATUSES = ("published", "draft")


@dataclass(frozen=True)
class Principal:
    """The caller of the token endpoint, as resolved from its credentials."""

    kind: str  # anonymous | account | robot | sync | license (and later kinds)
    subject: str  # the JWT "sub": shown in registry logs and as the actor of events
    account_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None  # a robot token's organization
    is_admin: bool = False
    # Registry scopes of the token used (pull/push); None = not limited (a password).
    token_scopes: frozenset[str] | None = None
    token_id: uuid.UUID | None = None
    # Repositories a credential is limited to (e.g. a license key); None = no such limit.
    repositories: frozenset[str] | None = None
    # When the credential stops being good (a token's expiry, a build's deadline): no
    # registry token made from it lives longer. None = no such end.
    expires_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal(kind="anonymous", subject="")


def product_repository(name: str) -> str:
    """The repository of the product a repository belongs to: its first two components
    ("" for a one-component name, which no product owns)."""
    parts = name.split("/", 2)
    return "/".join(parts[:2]) if len(parts) >= 2 else ""


@dataclass(frozen=True)
class RepoFacts:
    """What the database says about one repository, from the principal's point of view."""

    name: str
    org_id: uuid.UUID | None = None  # the organization owning the namespace, if any
    # The principal's role in that organization; in a personal namespace "owner" for its
    # user, the collaborator permission (read, write, admin) for the others given one.
    role: str | None = None
    personal: bool = False  # the namespace is a user's
    product_id: uuid.UUID | None = None  # the product it belongs to (itself or its parent)
    product_status: str | None = None
    product_public: bool = False  # active tiers all free and public
    product_paid: bool = False  # one of its active tiers at least is paid
    entitled: bool = False  # a usable entitlement held by the principal
    marked_public: bool = False  # the namespace's owner made it public
    # The earliest instant after the read at which ``entitled`` could change by time alone
    # (an entitlement held ends, its grace ends, or one starts); None: none known.
    changes_at: datetime | None = field(default=None, compare=False)

    @property
    def sold(self) -> bool:
        """It belongs to a product with a paid active tier: its tiers, not the public mark,
        decide who pulls it."""
        return self.product_id is not None and self.product_paid

    @property
    def public(self) -> bool:
        """Anyone may pull it, anonymous included. A suspended product's repositories never
        are, even one its owner marked public: suspending takes the images down. Nor are a
        paid product's: the mark does not give away what is sold (to give the images away,
        make every active tier free and public)."""
        if self.product_id is not None and self.product_status == "suspended":
            return False
        if self.marked_public and not self.sold:
            return True
        return (
            self.product_id is not None
            and self.product_status == "published"
            and self.product_public
        )

    @property
    def listed(self) -> bool:
        """It belongs to a product whose listing everyone sees (published)."""
        return self.product_id is not None and self.product_status == "published"

    @property
    def entitles(self) -> bool:
        """It belongs to a product whose entitlements give access now (not suspended)."""
        return self.product_id is not None and self.product_status in ENTITLED_STATUSES


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
    if principal.kind == "build":
        if principal.repositories is not None and facts.name in principal.repositories:
            return {"pull", "push"}
        return {"pull"} if facts.public else set()
    if principal.kind == "account" and facts.role is not None:
        allowed.add("pull")
        if facts.role in PUSHERS:
            allowed.add("push")
        if facts.role in DELETERS:
            allowed.add("delete")
    elif principal.kind == "robot" and facts.org_id and facts.org_id == principal.organization_id:
        allowed.update(("pull", "push"))
    if principal.is_admin or principal.kind == "sync":
        allowed.add("pull")
    if facts.public or (facts.entitled and facts.entitles):
        allowed.add("pull")
    if principal.repositories is not None:
        # A credential limited to some repositories (a license): pull on its product's
        # repositories while the product is not suspended, and on public repositories as
        # anyone may; nothing else.
        covered = facts.entitles and product_repository(facts.name) in principal.repositories
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
        # Explained by the caller (why, and where to get access) with the principal's
        # entitlement; a product not listed is explained as nothing at all to outsiders.
        return Denied(scope, missing, "no_access", f"No access to {scope.name}.", repo.product_id)
    if "pull" in missing:
        return Denied(scope, missing, "no_access", f"No access to {scope.name}.")
    namespace = scope.namespace or scope.name
    if principal.token_scopes is not None and not _token_allows(principal, "push"):
        message = "The token used has no 'push' scope."
    elif repo.personal and "push" in missing:
        message = f"Only {namespace} and the collaborators given write access push to {scope.name}."
    elif repo.personal:
        message = f"Only {namespace} and admin collaborators may delete in {scope.name}."
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


# --- refusals explained ------------------------------------------------------------------


ALLOWED_REASONS = ("publisher", "robot", "admin", "public", "entitled", "license")
HELD_MESSAGES = {
    "expired": "Your entitlement to {repo} expired.",
    "revoked": "Your entitlement to {repo} was revoked.",
    "suspended": "Your entitlement to {repo} is suspended ({why}).",
    "pending": "Your entitlement to {repo} has not started yet.",
}


@dataclass(frozen=True)
class Held:
    """The latest entitlement to a product the principal holds (a usable one first)."""

    state: str  # store.licensing.usable.effective_status
    reason: str = ""


def pull_reason(principal: Principal, facts: RepoFacts) -> str | None:
    """Why the rule lets ``principal`` pull (one of ALLOWED_REASONS), None if it does not."""
    if "pull" not in allowed_repository_actions(principal, facts):
        return None
    if principal.repositories is not None:
        return "license" if facts.entitles and not facts.public else "public"
    if principal.kind == "account" and facts.role is not None:
        return "publisher"
    if principal.kind == "robot" and facts.org_id and facts.org_id == principal.organization_id:
        return "robot"
    if facts.public:
        return "public"
    if facts.entitled and facts.entitles:
        return "entitled"
    return "admin"


def pull_ends(principal: Principal, facts: RepoFacts) -> datetime | None:
    """When a pull the principal may do only through an entitlement it holds may stop by
    time alone (its end, or the end of its grace); None when the pull does not hang on one
    (or nothing is known to end it)."""
    if not facts.entitled or pull_reason(principal, facts) != "entitled":
        return None
    return facts.changes_at


def refusal(principal: Principal, facts: RepoFacts, held: Held | None) -> tuple[str, str, bool]:
    """Why ``principal`` may not pull: ``(reason, message, informative)``.

    ``held`` is the latest entitlement to the product the principal holds, None without
    one. ``informative`` is False when the answer is the one a repository that does not
    exist gets: whoever neither sees the product's listing nor ever held it learns nothing
    (a draft, a suspended product, an unlisted repository)."""
    name = facts.name
    nothing = ("no_access", f"No access to {name}.", False)
    if principal.token_scopes is not None and not _token_allows(principal, "pull"):
        return "token_scope", "The token used has no 'pull' scope.", False
    if facts.product_id is None or (not facts.listed and held is None):
        return nothing
    repo = product_repository(name)
    if facts.product_status == "suspended":
        return "product_suspended", f"{repo} is suspended.", True
    if principal.anonymous:
        return "login_required", f"Log in to pull {repo}.", True
    if principal.kind == "robot" and held is None:
        return "no_license", f"The robot token's organization has no license for {repo}.", True
    if principal.kind not in ("account", "robot"):
        return "no_license", f"This credential does not cover {repo}.", True
    if held is not None and held.state in HELD_MESSAGES:
        code = "no_license" if held.state == "pending" else held.state
        why = held.reason or "payment past due"
        return code, HELD_MESSAGES[held.state].format(repo=repo, why=why), True
    if not facts.listed:
        # Unpublished: those who held access keep it to its end; nobody new gets it.
        return "no_license", f"{repo} is not published.", True
    return "no_license", f"You have no license for {repo}.", True
