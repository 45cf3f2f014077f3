"""What licensing does when an entitlement changes."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from store.db import utcnow
from store.licensing.models import Entitlement, License


def entitlement_changed(session: Session, entitlement: Entitlement) -> None:
    # A revoked entitlement revokes every license issued for it, at once.
    if entitlement.status == "revoked":
        session.execute(
            update(License)
            .where(License.entitlement_id == entitlement.id, License.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revocation_reason=entitlement.reason)
        )
