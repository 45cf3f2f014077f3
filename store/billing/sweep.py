"""Running ``subscriptions.expire_due`` opportunistically (at most once a minute per process)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from store.billing import subscriptions
from store.billing.runtime import Billing
from store.db import session_scope

log = logging.getLogger("store.billing")


def maybe_sweep(factory: sessionmaker[Session], billing: Billing) -> None:
    """Sweep in its own transaction if this process has not for a while; never raises."""
    if not billing.sweep_due():
        return
    try:
        with session_scope(factory) as session:
            counts = subscriptions.expire_due(session, billing)
        if any(counts.values()):
            log.info("billing sweep: %s", counts)
    except Exception:
        log.exception("billing sweep failed")
