"""Request-scoped dependencies: settings and the unit of work (who calls the JSON API:
``store.accounts.caller``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from store.config import Settings
from store.db import WriteTurns, read_only_session


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
