"""Synchronizer-token CSRF protection for every state-changing form of the web pages."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape

from store.errors import Forbidden

SESSION_KEY = "csrf"
FIELD = "csrf_token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CsrfFailed(Forbidden):
    code = "csrf_failed"


def token(request: Request) -> str:
    """This session's token, made on first use."""
    value = request.session.get(SESSION_KEY)
    if not isinstance(value, str) or not value:
        value = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = value
    return value


def rotate(request: Request) -> str:
    request.session[SESSION_KEY] = secrets.token_urlsafe(32)
    return str(request.session[SESSION_KEY])


def hidden_input(request: Request) -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        FIELD, escape(token(request))
    )


@pass_context
def csrf_field(context: Context) -> Markup:
    """Jinja global: ``{{ csrf_field() }}`` inside every POST form."""
    return hidden_input(context["request"])


async def csrf_protect(request: Request) -> None:
    """Router dependency: every unsafe request must carry the session's token in its form."""
    if request.method not in _UNSAFE:
        return
    expected = request.session.get(SESSION_KEY) if "session" in request.scope else None
    form = await request.form()
    sent = form.get(FIELD)
    if (
        not isinstance(expected, str)
        or not expected
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise CsrfFailed(
            "This form expired or was sent from another site. "
            "Go back, reload the page and try again."
        )
