"""Mail pages: notice preferences, one-click unsubscribe, the outbox for administrators."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from store.deps import DbSession
from store.mail import outbox, service
from store.mail.strings import NOTICE_CATEGORIES
from store.web import forms
from store.web.forms import Form
from store.web.routing import AdminAccount, RequiredAccount, page_router
from store.web.templating import flash, redirect, render

router = page_router()
# Unsubscribe links are used from mail clients (RFC 8058 one-click POST), with no session
# and no CSRF token: the signed token in the address is the authority, and all it can do is
# turn one notice category off for one account.
unsubscribe_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/my/notifications")
def notifications(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """Which notices this account receives by e-mail."""
    return render(
        request,
        "mail/notifications.html",
        {
            "preferences": service.preferences(session, account),
            "categories": NOTICE_CATEGORIES,
        },
    )


@router.post("/my/notifications")
def save_notifications(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    service.set_preferences(
        session,
        account=account,
        wanted={c for c in forms.choices(form, "notices") if c in NOTICE_CATEGORIES},
    )
    flash(request, "Your notification settings are saved.")
    return redirect("/my/notifications")


@unsubscribe_router.get("/mail/unsubscribe/{token}")
def unsubscribe_page(request: Request, token: str) -> Response:
    """Ask before unsubscribing (a link checker following the address changes nothing)."""
    _account_id, category = outbox.read_unsubscribe_token(request.app.state.settings, token)
    return render(
        request,
        "mail/unsubscribe.html",
        {"token": token, "label": NOTICE_CATEGORIES[category], "done": False},
    )


@unsubscribe_router.post("/mail/unsubscribe/{token}")
def unsubscribe(request: Request, token: str, session: DbSession) -> Response:
    account_id, category = outbox.read_unsubscribe_token(request.app.state.settings, token)
    service.unsubscribe(session, account_id=account_id, category=category)
    return render(
        request,
        "mail/unsubscribe.html",
        {"token": token, "label": NOTICE_CATEGORIES[category], "done": True},
    )


@router.get("/admin/mail")
def admin_outbox(
    request: Request, session: DbSession, admin: AdminAccount, failed: str = ""
) -> Response:
    """The outbox: the newest messages, or the failed ones, with their errors."""
    page = service.list_outbox(session, failed_only=bool(failed))
    return render(
        request,
        "mail/admin_outbox.html",
        {"page": page, "failed": bool(failed), "section": "mail"},
    )


@router.post("/admin/mail/{message_id}/retry")
def admin_retry(
    request: Request, message_id: uuid.UUID, session: DbSession, admin: AdminAccount
) -> Response:
    message = service.retry(session, message_id=message_id)
    flash(request, f"The message to {message.to_addr} is queued again.")
    return redirect("/admin/mail?failed=1")
