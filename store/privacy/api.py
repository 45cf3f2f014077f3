"""JSON API: the caller's data export and account deletion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from store.accounts import login as password_login
from store.accounts.caller import CurrentAccount
from store.accounts.schemas import AccountDeletion
from store.deps import DbSession
from store.privacy import lifecycle
from store.security_headers import NO_STORE

router = APIRouter(tags=["accounts"])


@router.get("/me/export", dependencies=[NO_STORE])
def export(account: CurrentAccount, session: DbSession) -> dict[str, Any]:
    """Everything the store holds about the calling account (profile, organizations,
    tokens, sessions, orders, subscriptions, entitlements, licenses, mail, activity)."""
    return lifecycle.export(session, account)


@router.post("/me/deletion", status_code=status.HTTP_204_NO_CONTENT)
def delete_me(
    body: AccountDeletion, request: Request, account: CurrentAccount, session: DbSession
) -> None:
    """Delete the calling account for good (password, and a current two-factor code when
    enabled). Refused with 409 ``account_not_deletable`` and the reasons in ``problems``
    while it is the only owner of an organization in use, has a subscription that renews, or
    is the last administrator. Wrong passwords and codes are limited as failed log-ins are
    (429 with Retry-After)."""
    with password_login.password_attempt(request, session, account):
        lifecycle.delete_account(
            session,
            settings=request.app.state.settings,
            account=account,
            password=body.password,
            code=body.code,
        )
