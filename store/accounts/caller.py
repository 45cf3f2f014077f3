"""Who calls the JSON API: the account behind a request's bearer token.

The JSON API takes bearer tokens only (never the browser's session cookie), so a cross-site
page cannot make a logged-in browser call it. A token's last use is recorded after the
response, in a transaction of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account
from store.db import session_scope, utcnow
from store.deps import DbSession, write_turns
from store.errors import Forbidden, Unauthorized


@dataclass
class ApiCaller:
    account: Account | None
    token: AccessToken | None


def bearer_secret(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def resolve_bearer_token(
    request: Request, session: Session, background: BackgroundTasks, secret: str
) -> AccessToken:
    """The usable token sent as the bearer; its use is recorded after the response, in a
    transaction of its own (the request's own may be read-only)."""
    token = accounts.resolve_token(session, secret)
    if token is None:
        raise Unauthorized("The access token is unknown, expired or revoked", code="bad_token")
    now = utcnow()
    if accounts.use_is_stale(token, now):
        background.add_task(
            write_turns(request).run,
            _record_token_use,
            request.app.state.sessionmaker,
            token.id,
            now,
        )
    return token


def _record_token_use(factory: sessionmaker[Session], token_id: uuid.UUID, now: datetime) -> None:
    with session_scope(factory) as session:
        accounts.touch_token(session, token_id=token_id, now=now)


def api_caller(request: Request, session: DbSession, background: BackgroundTasks) -> ApiCaller:
    """The account behind an API request's bearer token; anonymous when there is none.

    The JSON API takes bearer tokens only (never the browser's session cookie), so a
    cross-site page cannot make a logged-in browser call it.
    """
    secret = bearer_secret(request)
    if secret is None:
        return ApiCaller(account=None, token=None)
    token = resolve_bearer_token(request, session, background, secret)
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
