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

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete as sa_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import validation
from store.accounts import service as accounts
from store.accounts.models import Account, Membership, Namespace, Organization
from store.audit import service as audit
from store.config import Settings
from store.db import utcnow
from store.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from store.keys.service import LoadedKey
from store.registry import grants, hub
from store.registry.models import COLLABORATOR_PERMISSIONS, HubRepository, RepositoryCollaborator
from store.registry.scopes import valid_repository
from store.registry.sync import RegistryClient

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


def account_may_push(session: Session, account_id: uuid.UUID | None, name: str) -> tuple[bool, str]:
    """Whether the account (by id; None or gone: no) is active and may push to the
    repository, and its name for messages (a running build pushes on the word of the
    account that saved its settings: ``store.builds``)."""
    account = session.get(Account, account_id) if account_id is not None else None
    if account is None:
        return False, "(a deleted account)"
    facts = facts_for(session, account, name)
    allowed = account.is_active and "push" in grants.allowed_repository_actions(
        principal_of(account), facts
    )
    return allowed, account.username


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


# --- the repository itself ---------------------------------------------------------------

MAX_DESCRIPTION = 300
MAX_README = 100_000


def _check_text(description: str | None, readme_md: str | None) -> None:
    if description is not None and (len(description) > MAX_DESCRIPTION or "\n" in description):
        raise ValidationFailed(
            f"The description is one line of at most {MAX_DESCRIPTION} characters",
            code="bad_description",
        )
    if description is not None:  # one line: no control characters either
        validation.text(
            description, what="The description", max_len=MAX_DESCRIPTION, field="description"
        )
    if readme_md is not None and len(readme_md) > MAX_README:
        raise ValidationFailed(
            f"The README is at most {MAX_README:,} characters", code="bad_readme"
        )


def _check_visibility(value: str | None, field: str = "visibility") -> None:
    if value is not None and value not in hub.VISIBILITIES:
        raise ValidationFailed(
            f"Visibility must be one of {', '.join(hub.VISIBILITIES)}",
            code="bad_visibility",
            field=field,
        )


def get(session: Session, account: Account | None, name: str) -> HubRepository:
    """A repository the account may see: one it may pull or has a level on, or one of a
    published product (whose listing everyone sees). NotFound otherwise, exactly as for a
    repository that does not exist."""
    name = clean_name(name)
    repo = hub.get_repository(session, name)
    if repo is None or not visible(session, account, name):
        raise NotFound(f"No repository {name}")
    return repo


def visible(session: Session, account: Account | None, name: str) -> bool:
    facts = facts_for(session, account, name)
    principal = principal_of(account)
    return (
        (account is not None and account.is_admin)
        or facts.listed
        or facts.role is not None
        or "pull" in grants.allowed_repository_actions(principal, facts)
    )


def create(
    session: Session,
    *,
    actor: Account,
    name: str,
    description: str = "",
    readme_md: str = "",
    visibility: str | None = None,
) -> HubRepository:
    """Create a repository before its first push (pushing creates one as well). Whoever may
    push to the namespace may create in it; ``visibility`` defaults to the namespace's, and
    only those who may change a repository's visibility (admin level) create one public in
    a namespace whose default is private (an editor cannot publish what owners keep private,
    such as a paid product's repository before its first push)."""
    name = clean_name(name)
    _check_text(description, readme_md)
    _check_visibility(visibility)
    namespace = namespace_of(session, name)
    if namespace is None:
        raise NotFound(f"No namespace '{name.split('/', 1)[0]}'")
    facts = facts_for(session, actor, name)
    if "push" not in grants.allowed_repository_actions(principal_of(actor), facts):
        raise Forbidden(f"You may not create repositories in '{namespace.name}'")
    # What the repository gets without asking (a product's repositories: private).
    default = "private" if hub.product_of(session, name) is not None else None
    if visibility == "public" and (default or namespace.default_visibility) != "public":
        found = level(session, actor, name)
        if found is None or _RANK[found] < _RANK["admin"]:
            raise Forbidden(
                f"Only owners of '{namespace.name}' create public repositories in it; leave "
                f"the visibility out (or private) and ask an owner to make it public",
                code="visibility_denied",
                field="visibility",
            )
    if hub.get_repository(session, name) is not None:
        raise Conflict(f"{name} exists already", code="repository_exists")
    if visibility is not None:
        hub.check_mark(session, name=name, visibility=visibility)
    repo = hub.ensure_repository(session, name)
    repo.description = description.strip()
    repo.readme_md = readme_md
    if visibility is not None:
        hub.set_visibility(session, name=name, visibility=visibility)
    session.flush()
    audit.record(
        session,
        action="repository.create",
        actor=actor,
        target_type="repository",
        target_id=name,
        org=owning_org(session, name),
        details={"repository": name, "visibility": repo.visibility},
    )
    return repo


def update(
    session: Session,
    *,
    actor: Account,
    name: str,
    description: str | None = None,
    readme_md: str | None = None,
    visibility: str | None = None,
) -> HubRepository:
    """Change a repository's description, README or visibility (owners, admin
    collaborators)."""
    name = clean_name(name)
    require_level(session, actor, name, "admin")
    _check_text(description, readme_md)
    _check_visibility(visibility)
    repo = hub.ensure_repository(session, name)
    if description is not None:
        repo.description = description.strip()
    if readme_md is not None:
        repo.readme_md = readme_md
    if visibility is not None and visibility != repo.visibility:
        from store.registry import visibility as settings

        settings.set_visibility(session, actor=actor, name=name, visibility=visibility)
    session.flush()
    return repo


def set_default_visibility(
    session: Session, *, actor: Account, namespace: str, visibility: str
) -> Namespace:
    """The visibility new repositories of a namespace get (its user, its organisation's
    owners, administrators)."""
    _check_visibility(visibility, "default_visibility")
    row = session.get(Namespace, namespace.strip().lower())
    if row is None:
        raise NotFound(f"No namespace '{namespace}'")
    if row.kind == "user":
        if not (actor.is_admin or row.account_id == actor.id):
            raise Forbidden(f"Only {row.name} sets the defaults of '{row.name}'")
    else:
        assert row.organization is not None
        accounts.require_role(session, actor, row.organization, "owner")
    row.default_visibility = visibility
    session.flush()
    return row


def defaults_of(session: Session, account: Account) -> list[Namespace]:
    """The namespaces whose defaults the account sets: its own, and its organizations' where
    it is an owner."""
    owned = select(Membership.organization_id).where(
        Membership.account_id == account.id, Membership.role == "owner"
    )
    return list(
        session.scalars(
            select(Namespace)
            .where((Namespace.account_id == account.id) | Namespace.organization_id.in_(owned))
            .order_by(Namespace.kind.desc(), Namespace.name)
        )
    )


@contextmanager
def operator_client(settings: Settings, signer: LoadedKey) -> Iterator[RegistryClient]:
    """A registry client acting with the store's own credential."""
    import httpx  # only when the registry is asked (≈ 7 MiB per process)

    with httpx.Client(timeout=30.0) as http:
        yield RegistryClient(settings, signer, base_url=settings.registry_url, http=http)


def delete(session: Session, client: RegistryClient, *, actor: Account, name: str) -> int:
    """Delete a repository: every manifest its tags point at, in the registry (with the
    store's credential), then its hub record with tags, pull history, stars and
    collaborators. Returns the number of manifests deleted. If the registry cannot be
    reached nothing is removed from the hub (ServiceUnavailable)."""
    name = clean_name(name)
    require_level(session, actor, name, "owner")
    repo = hub.get_repository(session, name)
    tags = client.tags(name)
    if repo is None and not tags:
        raise NotFound(f"No repository {name}")
    digests = {client.manifest(name, tag)[0] for tag in tags}
    deleted = sum(
        1 for digest in sorted(digests) if digest and client.delete_manifest(name, digest)
    )
    if repo is not None:
        session.delete(repo)
    session.flush()
    audit.record(
        session,
        action="repository.delete",
        actor=actor,
        target_type="repository",
        target_id=name,
        org=owning_org(session, name),
        details={"repository": name, "tags": sorted(tags), "manifests": deleted},
    )
    return deleted


def transfer(
    session: Session, client: RegistryClient, *, actor: Account, name: str, organization: str
) -> HubRepository:
    """Move a repository of a personal namespace to an organisation the actor owns: its
    tags are copied in the registry (blobs mounted, not uploaded again) and removed from the
    old name; the hub record (description, README, pulls, stars) follows under the new
    name. Collaborators do not: the organisation's roles decide from then on."""
    name = clean_name(name)
    require_level(session, actor, name, "owner")
    source = namespace_of(session, name)
    if source is None or source.kind != "user":
        raise ValidationFailed(
            "Only repositories of personal namespaces are transferred", code="not_personal"
        )
    org = accounts.get_organization(session, organization)
    accounts.require_role(session, actor, org, "owner")
    dest = f"{org.slug}/{name.split('/', 1)[1]}"
    if hub.get_repository(session, dest) is not None or hub.product_of(session, dest) is not None:
        raise Conflict(f"{dest} exists already", code="repository_exists")
    if client.tags(dest):
        raise Conflict(f"{dest} exists already in the registry", code="repository_exists")
    repo = hub.ensure_repository(session, name)
    tags = client.tags(name)
    copied: list[str] = []
    try:
        for tag in tags:
            if client.copy_manifest(name, dest, tag) is not None:
                copied.append(tag)
    except Exception:
        # Nothing half-written: what was copied so far is removed again.
        for tag in copied:
            digest = client.manifest(dest, tag)[0]
            if digest:
                client.delete_manifest(dest, digest)
        raise
    digests = {client.manifest(name, tag)[0] for tag in tags}
    for digest in sorted(digests):
        if digest:
            client.delete_manifest(name, digest)
    session.execute(
        sa_delete(RepositoryCollaborator).where(RepositoryCollaborator.repository_id == repo.id)
    )
    repo.name, repo.namespace = dest, org.slug
    session.flush()
    hub.refresh_visibility(session, dest)
    audit.record(
        session,
        action="repository.transfer",
        actor=actor,
        target_type="repository",
        target_id=dest,
        org=org,
        details={"from": name, "to": dest, "tags": copied},
    )
    return repo
