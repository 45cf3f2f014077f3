"""Stars: a logged-in account stars a repository it may see, once.

The star row's primary key (repository, account) decides: the insert either adds the row or
does nothing (``ON CONFLICT DO NOTHING``), and only an insert that added a row increments
``star_count``, in the same transaction (likewise a delete that removed one decrements it).
Concurrent stars by the same account count once; concurrent stars by different accounts
each count, since the counter is updated by an atomic ``star_count + 1``.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.db import utcnow
from store.registry import hub, repositories
from store.registry.models import HubRepository, HubStar


def star(session: Session, *, account: Account, name: str) -> HubRepository:
    repo = repositories.get(session, account, name)
    stmt = (
        hub._insert(session, HubStar)
        .values(repository_id=repo.id, account_id=account.id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["repository_id", "account_id"])
        .returning(HubStar.__table__.c.account_id)
    )
    if session.execute(stmt).first() is not None:
        session.execute(
            update(HubRepository)
            .where(HubRepository.id == repo.id)
            .values(star_count=HubRepository.star_count + 1)
        )
    session.flush()
    session.refresh(repo)
    return repo


def unstar(session: Session, *, account: Account, name: str) -> HubRepository:
    repo = repositories.get(session, account, name)
    removed = session.execute(
        delete(HubStar)
        .where(HubStar.repository_id == repo.id, HubStar.account_id == account.id)
        .returning(HubStar.account_id)
    )
    if removed.first() is not None:
        session.execute(
            update(HubRepository)
            .where(HubRepository.id == repo.id)
            .values(star_count=HubRepository.star_count - 1)
        )
    session.flush()
    session.refresh(repo)
    return repo


def starred(session: Session, account: Account | None, repo: HubRepository) -> bool:
    if account is None:
        return False
    return (
        session.scalar(
            select(HubStar.account_id).where(
                HubStar.repository_id == repo.id, HubStar.account_id == account.id
            )
        )
        is not None
    )


def starred_by(session: Session, account: Account) -> list[HubRepository]:
    return list(
        session.scalars(
            select(HubRepository)
            .join(HubStar, HubStar.repository_id == HubRepository.id)
            .where(HubStar.account_id == account.id)
            .order_by(HubRepository.name)
        )
    )
