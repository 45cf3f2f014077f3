"""What every page route shares: CSRF, who is looking, and safe redirect targets."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse

from store.accounts import two_factor
from store.accounts.models import Account
from store.deps import DbSession
from store.errors import Forbidden
from store.web.auth import current_account, require_account, touch_later
from store.web.csrf import csrf_protect


def _viewer(request: Request, session: DbSession, background: BackgroundTasks) -> Account | None:
    account = current_account(request, session)
    touch_later(request, background)
    return account


# Where an account that must set up two-factor sign-in may still go.
_TWO_FACTOR_SETUP = ("/my/two-factor", "/logout")


def _required(request: Request, session: DbSession, background: BackgroundTasks) -> Account:
    account = require_account(request, session)
    touch_later(request, background)
    if not request.url.path.startswith(_TWO_FACTOR_SETUP) and two_factor.required_but_missing(
        session, request.app.state.settings, account
    ):
        raise Forbidden(
            "Administrators and organization owners must set up two-factor sign-in first",
            code="two_factor_setup_required",
        )
    return account


def _admin(account: Annotated[Account, Depends(_required)]) -> Account:
    if not account.is_admin:
        raise Forbidden("This part of the store is for administrators only", code="admins_only")
    return account


Viewer = Annotated[Account | None, Depends(_viewer)]
RequiredAccount = Annotated[Account, Depends(_required)]
AdminAccount = Annotated[Account, Depends(_admin)]


def page_router() -> APIRouter:
    """A router for HTML pages: CSRF-checked, viewer loaded, kept out of the OpenAPI schema."""
    return APIRouter(
        include_in_schema=False,
        default_response_class=HTMLResponse,
        dependencies=[Depends(csrf_protect), Depends(_viewer)],
    )


def safe_next(value: str | None, default: str = "/") -> str:
    """A local path to go to after logging in; anything that could leave the store is refused."""
    if not value or not isinstance(value, str) or len(value) > 2000:
        return default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(ch) < 32 or ch.isspace() for ch in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def return_path(request: Request) -> str | None:
    """Where a browser should come back to after logging in, for the page it asked for."""
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return safe_next(target, "") or None
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc == request.url.netloc:
        target = referer.path + (f"?{referer.query}" if referer.query else "")
        return safe_next(target, "") or None
    return None
