"""Billing follows catalog edits (``store.catalog.events``), in the edit's transaction and
without calling the payment gateway.

- A product's status: each open subscription's end decision is recorded (unpublished: at
  the end of the paid period; suspended: now), ``access.product_status_changed``. The
  gateway is told, and a product published again has the unpublishing's period-end
  cancellations lifted, by ``access.follow_product`` after the edit commits (the page, API
  or command that made it) and, whatever happens to that, by the next sweep
  (``access.retry_pending``; ``store billing sweep`` and the app's own sweep).
- A tier's price: nothing is recorded; the tier's gateway price is made when the sweep finds
  a recurring tier without one (``prices.sync_missing``), at the tier's first checkout
  (``orders.start_checkout``), or by ``store billing sync``, whichever comes first.

So a catalog edit never waits on the gateway, and a gateway that cannot be reached never
costs the publisher the edit.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session, sessionmaker

from store.billing import access, prices
from store.billing.runtime import Billing
from store.catalog.events import CatalogEvent, StatusChanged
from store.catalog.models import Product
from store.db import session_scope

log = logging.getLogger("store.billing")


def follow_catalog(session: Session, event: CatalogEvent) -> None:
    if isinstance(event, StatusChanged):
        product = session.get(Product, event.product_id)
        if product is not None:
            access.product_status_changed(session, product, event.old, event.new)


def follow_up(session: Session, billing: Billing, product_id: uuid.UUID) -> None:
    """After a catalog edit of the product committed: the gateway is told what the edit
    recorded (its subscriptions' decisions, its recurring tiers' new prices)."""
    product = session.get(Product, product_id)
    if product is None:
        return  # deleted: a draft without customers has nothing at the gateway to follow
    access.follow_product(session, billing, product)
    prices.sync_missing(session, billing, product_id=product_id)


def after_edit(factory: sessionmaker[Session], billing: Billing, product_id: uuid.UUID) -> None:
    """``follow_up`` in a unit of work of its own; never raises (the edit is committed, and
    the sweep sends whatever fails here)."""
    try:
        with session_scope(factory) as session:
            follow_up(session, billing, product_id)
    except Exception:
        log.warning("catalog edit of product %s: gateway not told yet", product_id, exc_info=True)
