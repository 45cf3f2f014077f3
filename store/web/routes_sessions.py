"""Where this account is logged in (store.accounts.sessions): list, end one, end the others."""

from __future__ import annotations

import uuid

from fastapi import Request
from starlette.responses import Response

from store.accounts import sessions
from store.db import utcnow
from store.deps import DbSession
from store.web.auth import lifetimes
from store.web.routing import RequiredAccount, page_router
from store.web.templating import flash, redirect, render

router = page_router()


@router.get("/my/sessions")
def my_sessions(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """The account's live browser sessions: device, address, since and last seen."""
    rows = sessions.active_sessions(
        session, account, lifetimes=lifetimes(request.app.state.settings), now=utcnow()
    )
    return render(
        request,
        "account/sessions.html",
        {"sessions": rows, "current": request.state.web_session_id},
        no_store=True,
    )


@router.post("/my/sessions/{session_id}/end")
def end_session(
    request: Request, session_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    """End one of this account's sessions (that browser is logged out at its next request)."""
    sessions.end_other_session(session, account, session_id=session_id)
    if session_id == request.state.web_session_id:
        request.session.clear()
        flash(request, "You are logged out.", "info")
        return redirect("/")
    flash(request, "The session is ended.")
    return redirect("/my/sessions")


@router.post("/my/sessions/end-others")
def end_others(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """End every session of this account but this browser's."""
    count = sessions.end_all_sessions(
        session, account, reason="ended", keep=request.state.web_session_id
    )
    flash(request, f"{count} other session{'s' if count != 1 else ''} ended.")
    return redirect("/my/sessions")
