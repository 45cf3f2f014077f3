"""Who may see a repository: the namespace owner's public/private setting, read and changed.

A repository is private unless it belongs to a published product whose tiers are all free
and public, or its namespace's owner marks it public here (the rule: :mod:`store.registry.grants`).
Only members of the namespace's organisation (and administrators) see the setting of a
repository; only its owners (and administrators) change it. To everyone else the repository
does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.audit import service as audit
from store.errors import NotFound, ValidationFailed
from store.registry import hub
from store.registry.models import HubRepository
from store.registry.scopes import valid_repository

VISIBILITIES = hub.VISIBILITIES


@dataclass(frozen=True)
class RepositoryVisibility:
    repository: str
    visibility: str  # the owner's setting: private | public
    public: bool  # anyone may pull it (the setting, or a free and public product)
    product: str | None  # the product it belongs to, if any


def _namespace(session: Session, account: Account | None, name: str) -> Organization:
    name = name.strip().lower()
    if not valid_repository(name) or "/" not in name:
        raise ValidationFailed(
            f"'{name}' is not a repository name (NAMESPACE/NAME)", code="bad_repository"
        )
    org = session.scalar(select(Organization).where(Organization.slug == name.split("/")[0]))
    if org is None or not accounts.has_role(session, account, org, "viewer"):
        raise NotFound(f"No repository {name}")
    return org


def get_visibility(session: Session, *, account: Account | None, name: str) -> RepositoryVisibility:
    """The setting of a repository (members of its namespace and administrators)."""
    _namespace(session, account, name)
    name = name.strip().lower()
    repo = hub.get_repository(session, name)
    return _view(session, name, repo.visibility if repo is not None else "private")


def set_visibility(
    session: Session, *, actor: Account, name: str, visibility: str
) -> RepositoryVisibility:
    """Mark a repository public or private (owners of its namespace, administrators). The
    setting may precede the first push; it stays when a product is created or deleted."""
    org = _namespace(session, actor, name)
    accounts.require_role(session, actor, org, "owner")
    name = name.strip().lower()
    before = hub.get_repository(session, name)
    previous = before.visibility if before is not None else "private"
    hub.set_visibility(session, name=name, visibility=visibility)
    if previous != visibility:
        audit.record(
            session,
            action="repository.visibility",
            actor=actor,
            target_type="repository",
            target_id=name,
            org=org,
            details={"repository": name, "from": previous, "to": visibility},
        )
    return _view(session, name, visibility)


def _view(session: Session, name: str, visibility: str) -> RepositoryVisibility:
    product = hub.product_of(session, name)
    return RepositoryVisibility(
        repository=name,
        visibility=visibility,
        public=hub.anonymous_facts(name, product, visibility).public,
        product=product.repository if product is not None else None,
    )


def list_repositories(session: Session, *, org: Organization) -> list[RepositoryVisibility]:
    """Every repository the hub knows in the organisation's namespace, with its setting."""
    repos = session.scalars(
        select(HubRepository)
        .where(HubRepository.namespace == org.slug)
        .order_by(HubRepository.name)
    )
    return [_view(session, r.name, r.visibility) for r in repos]
