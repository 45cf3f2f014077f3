"""Mail pages: notice preferences, one-click unsubscribe, the outbox for administrators."""

from __future__ import annotations

import uuid
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from store.accounts.models import Account
from store.billing import sale_notices
from store.deps import DbSession
from store.mail import outbox, service
from store.mail.strings import NOTICE_CATEGORIES
from store.web import forms
from store.web.forms import Form, FormState
from store.web.routing import AdminAccount, RequiredAccount, page_router
from store.web.templating import flash, redirect, render

router = page_router()
# Unsubscribe links are used from mail clients (RFC 8058 one-click POST), with no session
# and no CSRF token: the signed token in the address is the authority, and all it can do is
# turn one notice category off for one account.
unsubscribe_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


SALE_MODES = (
    ("each", "A mail per sale"),
    ("daily", "One digest a day"),
    ("none", "No sale notices"),
)


def _notifications_page(
    request: Request,
    session: Session,
    account: Account,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    choices = sale_notices.choices(session, account)
    shown = {f"sales-{c.organization.slug}" for c in choices}
    return render(
        request,
        "mail/notifications.html",
        {
            "preferences": service.preferences(session, account),
            "categories": NOTICE_CATEGORIES,
            "sale_choices": choices,
            # an error about an organization the page has no form for (not a member)
            "sales_error": form.error
            if form.name.startswith("sales-") and form.name not in shown
            else "",
            "sale_modes": SALE_MODES,
            "form": form,
        },
        status=status,
    )


@router.get("/my/notifications")
def notifications(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """Which notices this account receives by e-mail, and how it hears of each of its
    organizations' sales."""
    return _notifications_page(request, session, account)


@router.post("/my/notifications/sales")
def save_sale_notices(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """A mail per sale, a daily digest, or none, for one organization."""
    organization = forms.text(form, "organization")

    def done(choice: sale_notices.Choice) -> Response:
        label = dict(SALE_MODES)[choice.mode]
        flash(request, f"Sales of {choice.organization.name}: {label.lower()}.")
        return redirect("/my/notifications")

    return forms.submit(
        session,
        form,
        f"sales-{organization}",
        lambda: sale_notices.choose(
            session, account=account, organization=organization, mode=forms.text(form, "mode")
        ),
        failed=partial(_notifications_page, request, session, account),
        done=done,
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
