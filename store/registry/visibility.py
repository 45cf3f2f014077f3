"""Who may see a repository: the namespace owner's public/private setting, read and changed.

A repository is private unless it belongs to a published product whose tiers are all free
and public, or its namespace's owner marks it public here (except a repository of a
product sold through a paid tier, or of a suspended one) (the rule: :mod:`store.registry.grants`).
Those with a level on a repository (:mod:`store.registry.repositories`: members of the
namespace's organization, the user of a personal namespace and its collaborators,
administrators) see its setting; owners and admin collaborators change it. To whoever may
not pull it, the repository does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account, Organization
from store.audit import service as audit
from store.registry import hub, repositories
from store.registry.models import HubRepository

VISIBILITIES = hub.VISIBILITIES


@dataclass(frozen=True)
class RepositoryVisibility:
    repository: str
    visibility: str  # the owner's setting: private | public
    public: bool  # anyone may pull it (the setting, or a free and public product)
    product: str | None  # the product it belongs to, if any
    # Why the setting is not what is in effect ("" when it is): a public mark on a
    # repository of a paid or suspended product opens nothing.
    note: str = ""
    # The owner may mark it public (a sold product's repositories are refused: 409).
    may_mark_public: bool = True


def get_visibility(session: Session, *, account: Account | None, name: str) -> RepositoryVisibility:
    """The setting of a repository (those with a level on it: members of its namespace's
    organization, the user of a personal namespace and its collaborators, administrators)."""
    name = repositories.clean_name(name)
    repositories.require_level(session, account, name, "read")
    repo = hub.get_repository(session, name)
    return _view(session, name, repo.visibility if repo is not None else "private")


def set_visibility(
    session: Session, *, actor: Account, name: str, visibility: str
) -> RepositoryVisibility:
    """Mark a repository public or private (owners of its namespace, admin collaborators,
    administrators). The setting may precede the first push; it stays when a product is
    created or deleted. A repository of a product sold through a paid tier is not marked
    public (409 ``sold_product``): the mark would not open it."""
    name = repositories.clean_name(name)
    repositories.require_level(session, actor, name, "admin")
    hub.check_mark(session, name=name, visibility=visibility)
    org = repositories.owning_org(session, name)
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
        note=hub.mark_note(name, product, visibility),
        may_mark_public=product is None or not product.is_sold,
    )


def list_repositories(session: Session, *, org: Organization) -> list[RepositoryVisibility]:
    """Every repository the hub knows in the organization's namespace, with its setting."""
    repos = session.scalars(
        select(HubRepository)
        .where(HubRepository.namespace == org.slug)
        .order_by(HubRepository.name)
    )
    return [_view(session, r.name, r.visibility) for r in repos]
