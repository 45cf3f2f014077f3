"""The store's followers of catalog edits, installed once per process by what composes the
store: ``create_app``, the ``store`` command, the demo and the test suite; and the app's
follow-up after an edit commits (``GatewayFollowUp``).

The catalog imports neither the registry nor billing (the layers, docs/architecture.md);
these two keep their own data in step with its edits, in the edit's transaction
(``store.catalog.events``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from store.billing.catalog_follow import after_edit
from store.billing.catalog_follow import follow_catalog as billing_follows
from store.billing.runtime import billing_of
from store.catalog import events
from store.registry.hub import follow_catalog as hub_follows


def install() -> None:
    """Idempotent: the hub's visibility first, then the subscriptions."""
    events.follow(hub_follows)
    events.follow(billing_follows)


@dataclass(frozen=True)
class GatewayFollowUp:
    """The app's ``events.AfterEdit``: in the app's write turn, a unit of work of its own
    tells the payment gateway what a committed catalog edit recorded."""

    app_state: Any  # the app's state: its sessions, write turns and billing runtime

    async def __call__(self, product_id: uuid.UUID) -> None:
        state = self.app_state
        await state.write_turns.run(after_edit, state.sessionmaker, billing_of(state), product_id)
