"""Helpers for search tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from store.registry.models import HubRepository


def make_repo(session: Session, name: str, **fields: Any) -> HubRepository:
    """A hub repository; public (marked so by its owner) unless ``private=True``."""
    private = fields.pop("private", False)
    repo = HubRepository(
        name=name,
        namespace=name.split("/", 1)[0],
        description=fields.pop("description", ""),
        private=private,
        visibility="private" if private else "public",
        pull_count=fields.pop("pull_count", 0),
        star_count=fields.pop("star_count", 0),
        **fields,
    )
    session.add(repo)
    session.flush()
    return repo
