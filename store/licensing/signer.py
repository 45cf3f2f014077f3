"""What signing a license document needs, as one typed value handed to the code that signs.

A ``LicenseSigner`` is made once per process (the app, a command, a worker) from its key
ring and settings, and passed explicitly to what may re-issue a license when an
entitlement's terms change (``store.licensing.entitlements.set_status`` and ``extend``; the
billing runtime carries the app's, ``store.billing.runtime.Billing.signer``). Given
``None``, nothing is signed then: the next request for the license issues it.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.config import Settings
from store.keys.service import KeyRing


@dataclass(frozen=True)
class LicenseSigner:
    keyring: KeyRing
    settings: Settings
