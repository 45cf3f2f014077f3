"""Request-scoped dependencies: settings, the unit of work, and who is calling."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import BackgroundTasks, Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account
from store.billing.runtime import billing_of
from store.config import Settings
from store.db import WriteTurns, read_only_session, session_scope, utcnow
from store.errors import Forbidden, Unauthorized


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WRITES_ON_READ = "_store_writes_on_read"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def writes_on_read(endpoint: Endpoint) -> Endpoint:
    """Mark a GET route that may write (makes a document on first request): its
    transaction is a writing one, like a POST's."""
    setattr(endpoint, _WRITES_ON_READ, True)
    return endpoint


def _reads_only(request: Request) -> bool:
    if request.method not in READ_ONLY_METHODS:
        return False
    route = request.scope.get("route")
    return not getattr(getattr(route, "endpoint", None), _WRITES_ON_READ, False)


def write_turns(request: Request) -> WriteTurns:
    turns: WriteTurns = request.app.state.write_turns
    return turns


async def write_turn(request: Request) -> AsyncIterator[None]:
    """A request that may write waits for its turn on the event loop (store.db)."""
    if _reads_only(request):
        yield
        return
    async with write_turns(request).turn():
        yield


def get_session(
    request: Request, _turn: Annotated[None, Depends(write_turn, scope="function")]
) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent.

    GET, HEAD and OPTIONS only read (HTTP's safe methods): their transaction is read-only
    (store.db), so on SQLite they never wait behind writers and never hold writers up. What
    such a request must record (a token's last use) is written after it, on its own; a GET
    route that makes something on first request is marked ``writes_on_read``."""
    factory = request.app.state.sessionmaker
    session: Session = read_only_session(factory) if _reads_only(request) else factory()
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
    secret = _bearer(request)
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
