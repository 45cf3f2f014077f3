"""My content (entitlements and invitations), personal access tokens and account settings."""

from __future__ import annotations

import json
import uuid
from functools import partial

from fastapi import Request
from starlette.responses import Response

from store import ratelimit
from store.accounts import links
from store.accounts import login as password_login
from store.accounts import service as accounts
from store.accounts.models import Account
from store.db import utcnow
from store.deps import DbSession
from store.errors import ValidationFailed
from store.licensing import entitlements
from store.privacy import lifecycle
from store.registry import hub
from store.security_headers import NO_STORE
from store.web import forms
from store.web.auth import login_session, logout_session
from store.web.forms import Form, FormState
from store.web.routing import RequiredAccount, page_router
from store.web.templating import flash, redirect, render

router = page_router()


@router.get("/my/content")
def my_content(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """What this account may pull (its own and its organizations'), and how."""
    now = utcnow()
    rows = [(e, e.effective_status(now)) for e in entitlements.entitlements_of(session, account)]
    return render(
        request,
        "account/content.html",
        {
            "account": account,
            "rows": rows,
            "install_tags": hub.install_tags(session, [e.product.repository for e, _ in rows]),
            "invitations": accounts.pending_invitations(session, account),
        },
    )


@router.post("/my/invitations/{invitation_id}/{answer}")
def answer_invitation(
    request: Request,
    invitation_id: uuid.UUID,
    answer: str,
    session: DbSession,
    account: RequiredAccount,
) -> Response:
    if answer not in ("accept", "decline"):
        raise ValidationFailed("Answer accept or decline", field="answer")
    invitation = accounts.answer_invitation(
        session, invitation_id=invitation_id, account=account, accept=answer == "accept"
    )
    slug = invitation.organization.slug
    if answer == "accept":
        flash(request, f"You joined {slug} as {invitation.role}.")
        return redirect(f"/publish/{slug}")
    flash(request, f"You declined the invitation to {slug}.", "info")
    return redirect("/my/content")


# --- personal access tokens -----------------------------------------------------------


def _tokens_page(
    request: Request,
    session: DbSession,
    account: Account,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    listed = accounts.list_tokens(session, account=account)
    return render(
        request,
        "account/tokens.html",
        {
            "tokens": [t for t in listed if t.kind == "personal"],
            "logins": [t for t in listed if t.kind == "refresh"],
            "scopes": accounts.TOKEN_SCOPES["personal"],
            "form": form,
            "now": utcnow(),
        },
        status=status,
    )


@router.get("/my/tokens")
def tokens(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    return _tokens_page(request, session, account)


@router.post("/my/tokens", dependencies=[NO_STORE])
def create_token(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Issue a personal access token; its secret is shown on this response only."""
    return forms.submit(
        session,
        form,
        "token",
        lambda: accounts.create_token(
            session,
            kind="personal",
            name=forms.text(form, "name"),
            scopes=forms.choices(form, "scopes"),
            created_by=account,
            expires_at=forms.expiry(form),
        ),
        failed=partial(_tokens_page, request, session, account),
        done=lambda issued: render(
            request,
            "account/token_created.html",
            {"issued": issued, "back": "/my/tokens", "username": account.username},
            no_store=True,
        ),
    )


@router.post("/my/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, token_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    token = accounts.get_token(session, token_id)
    if token.kind not in ("personal", "refresh"):
        raise ValidationFailed("Revoke robot tokens on their organization's page", field="token")
    accounts.revoke_token(session, token=token, actor=account)
    flash(request, f"Token '{token.name}' is revoked.")
    return redirect("/my/tokens")


# --- account settings -----------------------------------------------------------------


def _refused(
    request: Request,
    session: DbSession,
    account: Account,
    reserved: ratelimit.Reservation | int,
    form: FormState,
    status: int,
) -> Response:
    """A refused form that asked for the current password: its attempt stays counted only
    when the password (or the code) was wrong."""
    password_login.give_back(session, reserved, form.code)
    return _settings(request, session, account, form, status)


def _settings(
    request: Request,
    session: DbSession,
    account: Account,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    return render(
        request,
        "account/settings.html",
        {
            "account": account,
            "form": form,
            "blockers": lifecycle.deletion_blockers(session, account),
        },
        status=status,
    )


@router.get("/my/account")
def settings_page(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    return _settings(request, session, account)


@router.post("/my/account/email")
def change_email(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Ask to change the address: a link goes to the new one, a notice to the current one;
    nothing changes until the link is opened."""
    address = forms.text(form, "new_email").strip().lower()
    wait = ratelimit.mail_link_wait(session, request, address)
    settings = request.app.state.settings

    def ask() -> str:
        if wait is not None:
            raise ratelimit.too_many(wait, "requests for a link")
        return links.request_email_change(
            session,
            settings=settings,
            account=account,
            new_address=address,
            password=forms.text(form, "current_password"),
        )

    return forms.submit(
        session,
        form,
        "email",
        ask,
        failed=partial(_settings, request, session, account),
        done=lambda new: forms.redirect_with(
            request,
            f"A link is on its way to {new}. Your address changes when you open it; "
            f"until then it stays {account.email}.",
            "/my/account",
        ),
    )


@router.get("/my/account/export")
def export_data(session: DbSession, account: RequiredAccount) -> Response:
    """Everything the store holds about this account, as a JSON file."""
    body = json.dumps(lifecycle.export(session, account), indent=2, sort_keys=True)
    return Response(
        body,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{account.username}-export.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/my/account/delete")
def delete_account(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Delete the account for good (password, a second-factor code when enabled, and the
    username typed again). Wrong passwords and codes are limited as failed log-ins are."""
    settings = request.app.state.settings
    reserved = password_login.reserve_password_attempt(request, session, account)

    def delete() -> None:
        if isinstance(reserved, int):
            raise ratelimit.too_many(reserved, "wrong passwords")
        if forms.text(form, "confirm_username").strip().lower() != account.username:
            raise ValidationFailed("Type your username to confirm", field="confirm_username")
        lifecycle.delete_account(
            session,
            settings=settings,
            account=account,
            password=forms.text(form, "current_password"),
            code=forms.text(form, "code"),
        )

    def deleted(_: None) -> Response:
        password_login.give_back(session, reserved, "")
        logout_session(request, session)
        return forms.redirect_with(
            request, "Your account is deleted. A last message confirms it.", "/", "info"
        )

    return forms.submit(
        session,
        form,
        "delete",
        delete,
        failed=partial(_refused, request, session, account, reserved),
        done=deleted,
    )


@router.post("/my/account/profile")
def change_profile(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Change the display name."""
    return forms.submit(
        session,
        form,
        "profile",
        lambda: accounts.set_display_name(
            session, account=account, display_name=forms.text(form, "display_name")
        ),
        failed=partial(_settings, request, session, account),
        done=lambda _: forms.redirect_with(request, "Your display name is changed.", "/my/account"),
    )


@router.post("/my/account/password")
def change_password(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Change the password; every other session of this account is logged out. Wrong
    current passwords are limited as failed log-ins are."""
    reserved = password_login.reserve_password_attempt(request, session, account)

    def change() -> None:
        if isinstance(reserved, int):
            raise ratelimit.too_many(reserved, "wrong passwords")
        if forms.text(form, "new_password") != forms.text(form, "new_password_confirm"):
            raise ValidationFailed(
                "The two new passwords do not match", field="new_password_confirm"
            )
        accounts.change_password(
            session,
            account=account,
            current=forms.text(form, "current_password"),
            new=forms.text(form, "new_password"),
        )

    def changed(_: None) -> Response:
        password_login.give_back(session, reserved, "")
        login_session(request, session, account)  # this browser stays logged in, anew
        return forms.redirect_with(
            request, "Your password is changed. Other sessions are logged out.", "/my/account"
        )

    return forms.submit(
        session,
        form,
        "password",
        change,
        failed=partial(_refused, request, session, account, reserved),
        done=changed,
    )
