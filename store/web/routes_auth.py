"""Sign up, log in and log out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from store import ratelimit
from store.accounts import links, two_factor
from store.accounts import login as password_login
from store.accounts import service as accounts
from store.accounts.models import Account
from store.deps import DbSession
from store.web import forms
from store.web.auth import login_session, logout_session, open_session, use_session
from store.web.csrf import csrf_protect
from store.web.forms import Form, FormState
from store.web.routes_two_factor import start_second_step
from store.web.routing import Viewer, page_router, safe_next
from store.web.templating import flash, redirect, render

router = page_router()
# Logging in takes no request transaction (store.accounts.login runs its own short ones),
# so it is not on the page router, whose viewer dependency opens one.
login_router = APIRouter(
    include_in_schema=False,
    default_response_class=HTMLResponse,
    dependencies=[Depends(csrf_protect)],
)


@router.get("/signup")
def signup_page(request: Request, viewer: Viewer, next: str = "") -> Response:
    if viewer is not None:
        return redirect(safe_next(next, "/my/content"))
    return render(request, "auth/signup.html", {"form": forms.NO_FORM, "next": safe_next(next, "")})


@router.post("/signup")
def signup(request: Request, session: DbSession, form: Form) -> Response:
    """Create an account and log it in."""
    target = safe_next(forms.text(form, "next"), "")
    wait = ratelimit.signup_wait(session, request)

    def create() -> Account:
        if wait is not None:
            raise ratelimit.too_many(wait, "sign-ups")
        problems = accounts.signup_problems(
            session,
            username=forms.text(form, "username"),
            email=forms.text(form, "email"),
            password=forms.text(form, "password"),
            display_name=forms.text(form, "display_name"),
        )
        if forms.text(form, "password") != forms.text(form, "password_confirm"):
            problems["password_confirm"] = "The two passwords do not match"  # noqa: S105
        if not forms.checkbox(form, "accept_terms"):
            problems["accept_terms"] = (
                "Accept the terms of service and the privacy policy to create an account"
            )
        if problems:
            taken = all("taken" in m or "exists" in m for m in problems.values())
            raise forms.FieldErrors(problems, status_code=409 if taken else 422)
        return accounts.create_account(
            session,
            username=forms.text(form, "username"),
            email=forms.text(form, "email"),
            password=forms.text(form, "password"),
            display_name=forms.text(form, "display_name"),
            terms_accepted=True,
        )

    def created(account: Account) -> Response:
        links.send_verification(session, settings=request.app.state.settings, account=account)
        login_session(request, session, account)
        flash(request, f"Welcome to the store, {account.display_name}.")
        flash(request, f"We sent a link to {account.email} to confirm your address.", "info")
        return redirect(target or "/my/content")

    return forms.submit(
        session,
        form,
        "signup",
        create,
        failed=lambda state, status: render(
            request, "auth/signup.html", {"form": state, "next": target}, status=status
        ),
        done=created,
    )


@router.get("/login")
def login_page(request: Request, viewer: Viewer, next: str = "") -> Response:
    if viewer is not None:
        return redirect(safe_next(next))
    return render(request, "auth/login.html", {"form": forms.NO_FORM, "next": safe_next(next, "")})


@login_router.post("/login")
async def login(request: Request, form: Form) -> Response:
    """Log in with a username or e-mail address and a password (store.accounts.login:
    the attempt is reserved first, the password checked outside any transaction)."""
    target = safe_next(forms.text(form, "next"), "")

    def refused(state: FormState, status: int) -> Response:
        request.state.me = None
        return render(request, "auth/login.html", {"form": state, "next": target}, status=status)

    def logged_in(outcome: tuple[Account, str | None]) -> Response:
        account, secret = outcome
        if secret is None:
            # The password was right; the code comes next (store.web.routes_two_factor).
            return start_second_step(request, account, target)
        use_session(request, account, secret)
        flash(request, f"Logged in as {account.username}.")
        return redirect(target or "/")

    return await forms.submit_async(
        form,
        "login",
        lambda: password_login.log_in(
            request,
            login=forms.text(form, "login"),
            password=forms.text(form, "password"),
            via="web",
            then=lambda session, account: (
                account,
                None if two_factor.enabled(account) else open_session(request, session, account),
            ),
        ),
        failed=refused,
        done=logged_in,
    )


@router.post("/logout")
def logout(request: Request, session: DbSession) -> Response:
    """Log out: this browser's session ends on the server too."""
    logout_session(request, session)
    flash(request, "You are logged out.", "info")
    return redirect("/")
