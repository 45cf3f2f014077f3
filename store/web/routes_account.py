"""My content (entitlements and invitations), personal access tokens and account settings."""

from __future__ import annotations

import uuid

from fastapi import Request
from starlette.responses import Response

from store.accounts import service as accounts
from store.accounts.models import Account
from store.db import utcnow
from store.deps import DbSession
from store.errors import StoreError
from store.licensing import entitlements
from store.security_headers import NO_STORE
from store.web import forms
from store.web.auth import login_session
from store.web.forms import FieldError, Form, FormState
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
        raise forms.FieldError("answer", "Answer accept or decline")
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
    result = forms.attempt(
        session,
        lambda: accounts.create_token(
            session,
            kind="personal",
            name=forms.text(form, "name"),
            scopes=forms.choices(form, "scopes"),
            created_by=account,
            expires_at=forms.expiry(form),
        ),
    )
    if isinstance(result, StoreError):
        failed = FormState.failed("token", form, result)
        return _tokens_page(request, session, account, failed, forms.error_status(result))
    return render(
        request,
        "account/token_created.html",
        {"issued": result, "back": "/my/tokens", "username": account.username},
        no_store=True,
    )


@router.post("/my/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, token_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    token = accounts.get_token(session, token_id)
    if token.kind not in ("personal", "refresh"):
        raise forms.FieldError("token", "Revoke robot tokens on their organization's page")
    accounts.revoke_token(session, token=token, actor=account)
    flash(request, f"Token '{token.name}' is revoked.")
    return redirect("/my/tokens")


# --- account settings -----------------------------------------------------------------


@router.get("/my/account")
def settings_page(request: Request, account: RequiredAccount) -> Response:
    return render(request, "account/settings.html", {"account": account, "form": forms.NO_FORM})


@router.post("/my/account/profile")
def change_profile(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Change the display name."""
    result = forms.attempt(
        session,
        lambda: accounts.set_display_name(
            session, account=account, display_name=forms.text(form, "display_name")
        ),
    )
    if isinstance(result, StoreError):
        return render(
            request,
            "account/settings.html",
            {"account": account, "form": FormState.failed("profile", form, result)},
            status=forms.error_status(result),
        )
    flash(request, "Your display name is changed.")
    return redirect("/my/account")


@router.post("/my/account/password")
def change_password(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Change the password; every other session of this account is logged out."""

    def change() -> None:
        if forms.text(form, "new_password") != forms.text(form, "new_password_confirm"):
            raise FieldError("new_password_confirm", "The two new passwords do not match")
        try:
            accounts.change_password(
                session,
                account=account,
                current=forms.text(form, "current_password"),
                new=forms.text(form, "new_password"),
            )
        except StoreError as exc:
            field = "current_password" if exc.code == "wrong_password" else "new_password"
            raise FieldError(field, exc.detail) from exc

    result = forms.attempt(session, change)
    if isinstance(result, StoreError):
        return render(
            request,
            "account/settings.html",
            {"account": account, "form": FormState.failed("password", form, result)},
            status=forms.error_status(result),
        )
    login_session(request, session, account)  # this browser stays logged in, anew
    flash(request, "Your password is changed. Other sessions are logged out.")
    return redirect("/my/account")
