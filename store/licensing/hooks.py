"""What licensing does when an entitlement changes."""

from __future__ import annotations

from sqlalchemy.orm import Session

from store.licensing.models import Entitlement
from store.licensing.signer import LicenseSigner


def entitlement_changed(
    session: Session, entitlement: Entitlement, signer: LicenseSigner | None
) -> None:
    """Licenses follow their entitlement.

    - Revoked (operator, refund, dispute): every license issued for it is revoked at once.
    - New terms (renewal, extension, grace): a new license is issued; older ones stay valid
      until their own expiry. Issued here when the caller gave a signer, otherwise on the
      next request for the license.
    """
    from store.licensing import service

    if entitlement.status == "revoked":
        service.revoke_licenses(session, entitlement, reason=entitlement.reason)
        return
    service.reissue_if_changed(session, entitlement, signer)
