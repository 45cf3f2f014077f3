"""Pages of the links sent by e-mail: forgotten password, reset, address verification
(logic in store.accounts.links)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from store import ratelimit
from store.accounts import links
from store.deps import DbSession
from store.errors import ValidationFailed
from store.web import forms
from store.web.forms import Form, FormState
from store.web.routing import RequiredAccount, page_router
from store.web.templating import flash, redirect, render

router = page_router()

SENT = (
    "If an account has this address, a link to reset its password is on its way. "
    "It works once, for an hour."
)


@router.get("/password/forgot")
def forgot_page(request: Request) -> Response:
    return render(request, "auth/forgot.html", {"form": forms.NO_FORM, "sent": False})


@router.post("/password/forgot")
def forgot(request: Request, session: DbSession, form: Form) -> Response:
    """Mail a reset link; the answer is the same whether or not the address has an account."""
    address = forms.text(form, "email").strip().lower()
    wait = ratelimit.mail_link_wait(session, request, address)
    settings = request.app.state.settings

    def send() -> None:
        if wait is not None:
            raise ratelimit.too_many(wait, "requests for a link")
        links.request_password_reset(session, settings=settings, address=address)

    return forms.submit(
        session,
        form,
        "forgot",
        send,
        failed=lambda state, status: render(
            request, "auth/forgot.html", {"form": state, "sent": False}, status=status
        ),
        done=lambda _: render(request, "auth/forgot.html", {"form": forms.NO_FORM, "sent": True}),
    )


def _link_invalid(request: Request, detail: str, *, no_store: bool = False) -> Response:
    return render(
        request, "auth/link_invalid.html", {"detail": detail}, status=400, no_store=no_store
    )


def _link_refused(request: Request) -> forms.Failed:
    """``failed`` for the buttons of a link's page: whatever the refusal, the link is void."""
    return lambda state, _status: _link_invalid(request, state.error)


@router.get("/password/reset/{token}")
def reset_page(request: Request, session: DbSession, token: str) -> Response:
    try:
        account = links.peek(session, token=token, purpose="reset")
    except links.BadLink as exc:
        return _link_invalid(request, exc.detail, no_store=True)
    return render(
        request,
        "auth/reset.html",
        {"form": forms.NO_FORM, "token": token, "username": account.username},
        no_store=True,
    )


@router.post("/password/reset/{token}")
def reset(request: Request, session: DbSession, token: str, form: Form) -> Response:
    """Set the new password; every session and refresh token of the account ends."""
    settings = request.app.state.settings

    def change() -> object:
        if forms.text(form, "password") != forms.text(form, "password_confirm"):
            raise ValidationFailed("The two passwords do not match", field="password_confirm")
        return links.reset_password(
            session, settings=settings, token=token, password=forms.text(form, "password")
        )

    def refused(state: FormState, status: int) -> Response:
        if state.code == links.BadLink.code:
            return _link_invalid(request, state.error)
        return render(
            request,
            "auth/reset.html",
            {"form": state, "token": token, "username": ""},
            status=status,
            no_store=True,
        )

    def changed(_: object) -> Response:
        request.session.clear()
        return forms.redirect_with(
            request,
            "Your password is changed and every session is logged out. Log in again.",
            "/login",
        )

    return forms.submit(session, form, "reset", change, failed=refused, done=changed)


@router.get("/verify-email/{token}")
def verify_page(request: Request, session: DbSession, token: str) -> Response:
    """Ask before confirming (a mail scanner following the link confirms nothing)."""
    try:
        account = links.peek(session, token=token, purpose="verify")
    except links.BadLink as exc:
        return _link_invalid(request, exc.detail)
    return render(request, "auth/verify.html", {"token": token, "address": account.email})


@router.post("/verify-email/{token}")
def verify(request: Request, session: DbSession, token: str, form: Form) -> Response:
    return forms.submit(
        session,
        form,
        "verify",
        lambda: links.verify_email(session, token=token),
        failed=_link_refused(request),
        done=lambda account: forms.redirect_with(
            request, f"Your address {account.email} is confirmed.", "/my/account"
        ),
    )


@router.post("/my/account/verify-email")
def resend(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """Send the verification link again (rate limited like every link by e-mail)."""
    wait = ratelimit.mail_link_wait(session, request, account.email)
    if wait is not None:
        raise ratelimit.too_many(wait, "requests for a link")
    settings = request.app.state.settings
    if links.send_verification(session, settings=settings, account=account):
        flash(request, f"A new link is on its way to {account.email}.")
    else:
        flash(request, "Your address is confirmed already.", "info")
    return redirect("/my/account")


@router.get("/confirm-email/{token}")
def confirm_email_page(request: Request, session: DbSession, token: str) -> Response:
    """A change of address: ask before changing (a mail scanner following the link changes
    nothing)."""
    try:
        _, address = links.pending_email(session, token=token)
    except links.BadLink as exc:
        return _link_invalid(request, exc.detail)
    return render(
        request,
        "auth/verify.html",
        {"token": token, "address": address, "action": f"/confirm-email/{token}"},
        no_store=True,
    )


@router.post("/confirm-email/{token}")
def confirm_email(request: Request, session: DbSession, token: str, form: Form) -> Response:
    settings = request.app.state.settings
    return forms.submit(
        session,
        form,
        "confirm",
        lambda: links.confirm_email_change(session, settings=settings, token=token),
        failed=_link_refused(request),
        done=lambda account: forms.redirect_with(
            request, f"Your address is now {account.email}.", "/my/account"
        ),
    )
