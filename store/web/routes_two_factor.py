"""Two-factor sign-in pages: the code step of logging in, set-up, recovery codes, turning
it off (logic in store.accounts.two_factor)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.responses import Response

from store import ratelimit
from store.accounts import login as password_login
from store.accounts import two_factor
from store.accounts.models import Account
from store.audit import service as audit
from store.deps import DbSession
from store.security_headers import NO_STORE
from store.web import forms
from store.web.auth import login_session
from store.web.forms import Form, FormState
from store.web.routing import RequiredAccount, page_router, safe_next
from store.web.templating import flash, redirect, render

router = page_router()

T = TypeVar("T")
PENDING_KEY = "two_factor_pending"
PENDING_TTL_S = 300  # the password step is good for five minutes


def start_second_step(request: Request, account: Account, target: str) -> Response:
    """After a right password for an account with two-factor sign-in: remember who (not
    logged in yet) and ask for the code."""
    request.session.clear()
    request.session[PENDING_KEY] = {
        "id": str(account.id),
        "stamp": account.password_changed_at.isoformat(),
        "next": target,
        "at": int(time.time()),
    }
    return redirect("/login/two-factor")


def _pending(request: Request, session: DbSession) -> tuple[Account, str] | None:
    data = request.session.get(PENDING_KEY)
    if not isinstance(data, dict):
        return None
    try:
        account = session.get(Account, uuid.UUID(str(data.get("id"))))
        fresh = time.time() - float(data.get("at", 0)) < PENDING_TTL_S
    except (TypeError, ValueError):
        return None
    if (
        account is None
        or not fresh
        or not account.is_active
        or not two_factor.enabled(account)
        or account.password_changed_at.isoformat() != data.get("stamp")
    ):
        request.session.pop(PENDING_KEY, None)
        return None
    return account, safe_next(str(data.get("next") or ""), "")


def reserve_code_attempt(
    request: Request, session: DbSession, account: Account
) -> ratelimit.Reservation | int:
    """Take one attempt of this account's codes and of this address before a code is
    checked, as for passwords; the seconds to wait when no attempt is left."""
    return password_login.reserve_attempt(request, session, f"2fa:{account.id}")


@router.get("/login/two-factor")
def second_step_page(request: Request, session: DbSession) -> Response:
    if _pending(request, session) is None:
        flash(request, "Log in with your password first.", "info")
        return redirect("/login")
    return render(request, "auth/two_factor.html", {"form": forms.NO_FORM})


@router.post("/login/two-factor", dependencies=[NO_STORE])
def second_step(request: Request, session: DbSession, form: Form) -> Response:
    """Finish logging in with a code from the app or a recovery code."""
    pending = _pending(request, session)
    if pending is None:
        flash(request, "That log-in expired. Log in with your password again.", "info")
        return redirect("/login")
    account, target = pending
    reserved = reserve_code_attempt(request, session, account)
    settings = request.app.state.settings

    def check() -> str:
        if isinstance(reserved, int):
            raise ratelimit.too_many(reserved, "wrong codes")
        return two_factor.verify(
            session, settings=settings, account=account, code=forms.text(form, "code")
        )

    def refused(state: FormState, status: int) -> Response:
        password_login.give_back(session, reserved, state.code)  # wrong codes stay counted
        return render(request, "auth/two_factor.html", {"form": state}, status=status)

    def logged_in(kind: str) -> Response:
        password_login.give_back(session, reserved, "")
        audit.sign_in(session, account=account, via="web")
        login_session(request, session, account)
        if kind == "recovery":
            left = two_factor.recovery_codes_left(session, account)
            flash(
                request,
                f"Logged in as {account.username} with a recovery code; {left} left. "
                "Make new ones under Two-factor sign-in.",
                "info",
            )
        else:
            flash(request, f"Logged in as {account.username}.")
        return redirect(target or "/")

    return forms.submit(
        session,
        form,
        "two_factor",
        check,
        failed=refused,
        done=logged_in,
    )


# --- set-up and management ------------------------------------------------------------------


def _page(
    request: Request,
    session: DbSession,
    account: Account,
    *,
    form: FormState = forms.NO_FORM,
    status: int = 200,
    enrolment: two_factor.Enrolment | None = None,
) -> Response:
    settings = request.app.state.settings
    if enrolment is None and account.totp_secret and not two_factor.enabled(account):
        enrolment = two_factor.enrolment(settings, account)
    return render(
        request,
        "account/two_factor.html",
        {
            "account": account,
            "enabled": two_factor.enabled(account),
            "enrolment": enrolment,
            # segno's SVG: generated markup of rects and a title, no user input in it.
            "qr_svg": Markup(enrolment.qr_svg) if enrolment else None,  # noqa: S704
            "codes_left": two_factor.recovery_codes_left(session, account),
            "required": two_factor.required_but_missing(session, settings, account),
            "form": form,
        },
        status=status,
        no_store=True,
    )


@router.get("/my/two-factor", dependencies=[NO_STORE])
def two_factor_page(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    return _page(request, session, account)


def _refused(request: Request, session: DbSession, account: Account) -> forms.Failed:
    return lambda state, status: _page(request, session, account, form=state, status=status)


@router.post("/my/two-factor/setup", dependencies=[NO_STORE])
def setup(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """Make a new secret and show it as a QR code, to be confirmed with a code."""
    settings = request.app.state.settings
    return forms.submit(
        session,
        FormData(),  # nothing typed: the button only
        "setup",
        lambda: two_factor.begin(session, settings=settings, account=account),
        failed=_refused(request, session, account),
        done=lambda enrolment: _page(request, session, account, enrolment=enrolment),
    )


def _codes(request: Request, codes: list[str], message: str) -> Response:
    return render(
        request, "account/recovery_codes.html", {"codes": codes, "message": message}, no_store=True
    )


@router.post("/my/two-factor/confirm", dependencies=[NO_STORE])
def confirm(request: Request, session: DbSession, account: RequiredAccount, form: Form) -> Response:
    """Turn two-factor sign-in on: a code from the new secret and the current password
    (a wrong one counts as a wrong code does)."""
    settings = request.app.state.settings
    return _with_code(
        request,
        session,
        account,
        form,
        "confirm",
        lambda code: two_factor.confirm(
            session,
            settings=settings,
            account=account,
            code=code,
            password=forms.text(form, "current_password"),
            keep=request.state.web_session_id,
        ),
        lambda codes: _codes(request, codes, "Two-factor sign-in is on."),
    )


def _with_code(
    request: Request,
    session: DbSession,
    account: Account,
    form: Form,
    fname: str,
    action: Callable[[str], T],
    done: Callable[[T], Response],
    refused: Callable[[str], None] | None = None,
) -> Response:
    """A form that needs a current code: one attempt of the account's codes is reserved
    first and given back unless the code (or the password the form asks too) was wrong;
    ``refused`` is told the code of a refusal too (another attempt to give back)."""
    reserved = reserve_code_attempt(request, session, account)

    def run() -> T:
        if isinstance(reserved, int):
            raise ratelimit.too_many(reserved, "wrong codes")
        return action(forms.text(form, "code"))

    def release(code: str) -> None:
        password_login.give_back(session, reserved, code)  # only wrong ones stay counted

    def failed(state: FormState, status: int) -> Response:
        release(state.code)
        if refused is not None:
            refused(state.code)
        return _page(request, session, account, form=state, status=status)

    def succeeded(result: T) -> Response:
        release("")
        return done(result)

    return forms.submit(session, form, fname, run, failed=failed, done=succeeded)


@router.post("/my/two-factor/disable")
def disable(request: Request, session: DbSession, account: RequiredAccount, form: Form) -> Response:
    """Turn two-factor sign-in off: the current password and a current code (or a recovery
    code). Wrong passwords count as they do wherever the current password is asked (and as
    wrong codes); the account's other sessions end."""
    settings = request.app.state.settings
    reserved = password_login.reserve_password_attempt(request, session, account)

    def turn_off(code: str) -> None:
        if isinstance(reserved, int):
            raise ratelimit.too_many(reserved, "wrong passwords")
        two_factor.disable(
            session,
            settings=settings,
            account=account,
            code=code,
            password=forms.text(form, "current_password"),
            keep=request.state.web_session_id,
        )

    def turned_off(_: None) -> Response:
        password_login.give_back(session, reserved, "")
        return forms.redirect_with(
            request,
            "Two-factor sign-in is off. Other sessions are logged out.",
            "/my/two-factor",
            "info",
        )

    return _with_code(
        request,
        session,
        account,
        form,
        "disable",
        turn_off,
        turned_off,
        refused=lambda code: password_login.give_back(session, reserved, code),
    )


@router.post("/my/two-factor/recovery-codes", dependencies=[NO_STORE])
def new_codes(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Ten new recovery codes; the old ones stop working."""
    settings = request.app.state.settings
    return _with_code(
        request,
        session,
        account,
        form,
        "codes",
        lambda code: two_factor.regenerate_codes(
            session, settings=settings, account=account, code=code
        ),
        lambda codes: _codes(request, codes, "New recovery codes; the old ones no longer work."),
    )
