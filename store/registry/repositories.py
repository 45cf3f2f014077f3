"""Hub repositories as first-class objects: who may manage one, and its collaborators.

What an account may do with a repository comes from the one may-pull rule
(:mod:`store.registry.grants`): the same facts, read by the same statement, give its
*level*:

- ``owner``: the user of a personal namespace, an owner of the namespace's organization, an
  administrator: everything, including deleting and transferring the repository;
- ``admin``: an admin collaborator: settings (description, README, visibility),
  collaborators, deleting tags;
- ``write``: an organization's editor, a write collaborator: push;
- ``read``: every other member of the organization, a read collaborator: pull, and see the
  settings.

Whoever has no level on a repository they may not pull gets the answer a repository that
does not exist gets (404).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Namespace, Organization
from store.audit import service as audit
from store.db import utcnow
from store.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from store.registry import grants, hub
from store.registry.models import COLLABORATOR_PERMISSIONS, HubRepository, RepositoryCollaborator
from store.registry.scopes import valid_repository

LEVELS = ("read", "write", "admin", "owner")
_RANK = {level: i for i, level in enumerate(LEVELS)}
_LEVEL_OF_ROLE = {
    "owner": "owner",
    "admin": "admin",
    "editor": "write",
    "write": "write",
    "viewer": "read",
    "finance": "read",
    "read": "read",
}


def clean_name(name: str) -> str:
    """A repository name as the registry spells it, or ValidationFailed."""
    name = name.strip().lower()
    if not valid_repository(name) or "/" not in name:
        raise ValidationFailed(
            f"'{name}' is not a repository name (NAMESPACE/NAME)", code="bad_repository"
        )
    return name


def namespace_of(session: Session, name: str) -> Namespace | None:
    """The namespace row (a user's or an organization's) a repository name lives in."""
    return session.get(Namespace, name.split("/", 1)[0])


def principal_of(account: Account | None) -> grants.Principal:
    if account is None:
        return grants.ANONYMOUS
    return grants.Principal(
        kind="account",
        subject=account.username,
        account_id=account.id,
        is_admin=account.is_admin,
    )


def facts_for(session: Session, account: Account | None, name: str) -> grants.RepoFacts:
    """The rule's facts about one repository for ``account``."""
    return grants.load_facts(session.connection(), principal_of(account), [name], utcnow())[name]


def level(session: Session, account: Account | None, name: str) -> str | None:
    """The account's level on the repository (LEVELS), None without one."""
    if account is None:
        return None
    if account.is_admin:
        return "owner"
    role = facts_for(session, account, name).role
    return _LEVEL_OF_ROLE.get(role) if role is not None else None


def may_pull(session: Session, account: Account | None, name: str) -> bool:
    """The rule's answer to "may this account (None: anonymous) pull it?"."""
    facts = facts_for(session, account, name)
    return "pull" in grants.allowed_repository_actions(principal_of(account), facts)


def require_level(session: Session, account: Account | None, name: str, minimum: str) -> str:
    """The account's level, if at least ``minimum``. Whoever may not even pull the
    repository is told it does not exist; others learn what they lack."""
    found = level(session, account, name)
    if found is not None and _RANK[found] >= _RANK[minimum]:
        return found
    if found is None and not may_pull(session, account, name):
        raise NotFound(f"No repository {name}")
    if account is None:
        raise Unauthorized("Log in first")
    raise Forbidden(f"You need {minimum} access to {name} to do this")


def owning_org(session: Session, name: str) -> Organization | None:
    row = namespace_of(session, name)
    return row.organization if row is not None and row.kind == "organization" else None


# --- collaborators -----------------------------------------------------------------------


@dataclass(frozen=True)
class Collaborator:
    username: str
    permission: str


def _personal_repository(session: Session, actor: Account, name: str) -> HubRepository:
    """A repository of a personal namespace that the actor administers (created in the
    hub if it is new: collaborators may be given before the first push)."""
    name = clean_name(name)
    require_level(session, actor, name, "admin")
    row = namespace_of(session, name)
    if row is None or row.kind != "user":
        raise ValidationFailed(
            "Collaborators are for repositories of personal namespaces; an organization "
            "gives access through its members' roles",
            code="not_personal",
        )
    return hub.ensure_repository(session, name)


def list_collaborators(session: Session, *, actor: Account, name: str) -> list[Collaborator]:
    name = clean_name(name)
    require_level(session, actor, name, "read")
    rows = session.execute(
        select(Account.username, RepositoryCollaborator.permission)
        .join(HubRepository, HubRepository.id == RepositoryCollaborator.repository_id)
        .join(Account, Account.id == RepositoryCollaborator.account_id)
        .where(HubRepository.name == name)
        .order_by(Account.username)
    )
    return [Collaborator(u, p) for u, p in rows]


def set_collaborator(
    session: Session, *, actor: Account, name: str, username: str, permission: str
) -> Collaborator:
    """Give an account read, write or admin on a repository of a personal namespace (or
    change what it has)."""
    if permission not in COLLABORATOR_PERMISSIONS:
        raise ValidationFailed(
            f"Permission must be one of {', '.join(COLLABORATOR_PERMISSIONS)}",
            code="bad_permission",
        )
    repo = _personal_repository(session, actor, name)
    try:
        who = accounts.get_account_by_username(session, username.strip())
    except NotFound:
        raise ValidationFailed(
            f"No account named '{username.strip()}'", code="no_account", field="username"
        ) from None
    if who.username == repo.namespace:
        raise ValidationFailed(
            f"{who.username} owns {repo.name} already", code="owner_not_collaborator"
        )
    row = session.scalar(
        select(RepositoryCollaborator).where(
            RepositoryCollaborator.repository_id == repo.id,
            RepositoryCollaborator.account_id == who.id,
        )
    )
    before = row.permission if row is not None else None
    if row is None:
        row = RepositoryCollaborator(repository_id=repo.id, account_id=who.id)
        session.add(row)
    row.permission = permission
    session.flush()
    if before != permission:
        audit.record(
            session,
            action="repository.collaborator",
            actor=actor,
            target_type="repository",
            target_id=repo.name,
            details={"repository": repo.name, "account": who.username, "from": before,
                     "to": permission},
        )  # fmt: skip
    return Collaborator(who.username, permission)


def remove_collaborator(session: Session, *, actor: Account, name: str, username: str) -> None:
    repo = _personal_repository(session, actor, name)
    row = session.scalar(
        select(RepositoryCollaborator)
        .join(Account, Account.id == RepositoryCollaborator.account_id)
        .where(
            RepositoryCollaborator.repository_id == repo.id,
            Account.username == username.strip(),
        )
    )
    if row is None:
        raise NotFound(f"{username.strip()} is not a collaborator on {repo.name}")
    session.delete(row)
    session.flush()
    audit.record(
        session,
        action="repository.collaborator",
        actor=actor,
        target_type="repository",
        target_id=repo.name,
        details={"repository": repo.name, "account": username.strip(), "from": row.permission,
                 "to": None},
    )  # fmt: skip
