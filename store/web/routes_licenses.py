"""License downloads for the logged-in customer ("My content")."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from store.deps import DbSession, SettingsDep, writes_on_read
from store.licensing import entitlements, service
from store.licensing.public import Keyring, lic_response
from store.security_headers import NO_STORE
from store.web.auth import require_account

router = APIRouter(include_in_schema=False)


@router.get("/my/licenses/{entitlement_id}.lic", dependencies=[NO_STORE])
@writes_on_read
def download_license(
    entitlement_id: uuid.UUID,
    request: Request,
    session: DbSession,
    keyring: Keyring,
    settings: SettingsDep,
) -> Response:
    """The .lic file of one of the logged-in account's entitlements."""
    account = require_account(request, session)
    entitlement = entitlements.get_visible_entitlement(session, entitlement_id, account)
    document = service.current_license(session, keyring, settings, entitlement)
    return lic_response(*service.license_file(document))
