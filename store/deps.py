"""Request-scoped dependencies: settings, the unit of work, and who is calling."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account
from store.billing.runtime import billing_of
from store.config import Settings
from store.errors import Forbidden, Unauthorized


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent."""
    session: Session = request.app.state.sessionmaker()
    # Licensing re-issues a license in the same transaction when an entitlement changes.
    session.info["keyring"] = request.app.state.keyring
    session.info["settings"] = request.app.state.settings
    # Catalog edits keep the payment gateway's prices in step (store.billing.prices).
    session.info["billing"] = billing_of(request.app.state)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": commit before the response, so a redirect never lands on stale data.
DbSession = Annotated[Session, Depends(get_session, scope="function")]


@dataclass
class ApiCaller:
    account: Account | None
    token: AccessToken | None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def api_caller(request: Request, session: DbSession) -> ApiCaller:
    """The account behind an API request's bearer token; anonymous when there is none.

    The JSON API takes bearer tokens only (never the browser's session cookie), so a
    cross-site page cannot make a logged-in browser call it.
    """
    secret = _bearer(request)
    if secret is None:
        return ApiCaller(account=None, token=None)
    token = accounts.resolve_token(session, secret)
    if token is None:
        raise Unauthorized("The access token is unknown, expired or revoked", code="bad_token")
    if token.kind != "personal" or "api" not in token.scopes:
        raise Forbidden("This token does not have the 'api' scope", code="insufficient_scope")
    return ApiCaller(account=token.account, token=token)


def api_account(caller: Annotated[ApiCaller, Depends(api_caller)]) -> Account:
    if caller.account is None:
        raise Unauthorized(
            "Send an access token with the 'api' scope as 'Authorization: Bearer <token>'",
            code="authentication_required",
        )
    return caller.account


def api_admin(account: Annotated[Account, Depends(api_account)]) -> Account:
    if not account.is_admin:
        raise Forbidden("Administrators only")
    return account


Caller = Annotated[ApiCaller, Depends(api_caller)]
CurrentAccount = Annotated[Account, Depends(api_account)]
AdminAccount = Annotated[Account, Depends(api_admin)]
