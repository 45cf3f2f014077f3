"""What a catalog edit tells the rest of the store, and who follows it.

The catalog owns products and tiers and imports neither the registry nor billing. An edit
others depend on publishes a typed event; the followers the store installed
(``store.followers.install``: the app, the ``store`` command, the demo and the tests call it
once) act on it **in the edit's transaction**, so what they keep in the database commits or
rolls back with the edit:

- the registry keeps the hub's view of who may pull (``store.registry.hub``);
- billing records each subscription's end decision when a product is unpublished or
  suspended, and lifts it when it is published again (``store.billing.access``).

No follower calls out of the process. The payment gateway is told after the commit
(``AfterEdit``: after the response of the page or API request that made the edit, after the
command's commit), and whatever that could not send is sent by the billing sweep
(``store billing sweep``, and the app's own one); see ``store.billing.catalog_follow``. So a
catalog edit never waits on the gateway, and one that cannot be reached costs nothing.

Publishing with no follower installed raises: an edit never silently skips them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class AccessChanged:
    """Who may pull from ``repository`` may have changed (a product's status, its tiers, the
    product deleted)."""

    repository: str


@dataclass(frozen=True)
class StatusChanged:
    """A product moved from ``old`` to ``new`` (draft, published, suspended)."""

    product_id: uuid.UUID
    old: str
    new: str


@dataclass(frozen=True)
class PriceChanged:
    """A paid tier is new, or its amount, currency or period changed: its gateway price is
    to be made again."""

    tier_id: uuid.UUID


CatalogEvent = AccessChanged | StatusChanged | PriceChanged
Follower = Callable[[Session, CatalogEvent], None]


class AfterEdit(Protocol):
    """What the app runs once a catalog edit of a product has committed: the payment gateway
    is told (``store.followers.GatewayFollowUp``). The page or API route that made the edit
    schedules it after its response (``store.catalog.api.follow_after_response``); the
    command line runs it after its commit."""

    async def __call__(self, product_id: uuid.UUID) -> None: ...


_followers: list[Follower] = []


def follow(follower: Follower) -> None:
    """Add a follower (once; adding the same one again does nothing)."""
    if follower not in _followers:
        _followers.append(follower)


def followers() -> tuple[Follower, ...]:
    return tuple(_followers)


def publish(session: Session, event: CatalogEvent) -> None:
    """Hand the event to every follower, in order, in the caller's transaction."""
    if not _followers:
        raise RuntimeError(
            "no catalog followers installed: call store.followers.install() at start-up"
        )
    for follower in _followers:
        follower(session, event)
