"""The HTML error pages: registered as ``app.state.html_error_renderer``."""

from __future__ import annotations

import logging

from fastapi import Request
from markupsafe import escape
from starlette.responses import HTMLResponse, Response

from store.db import read_only_session
from store.web.auth import current_account
from store.web.routing import return_path
from store.web.templating import flash, redirect, render, with_query

log = logging.getLogger("store.web")

TITLES = {
    400: "That request did not work",
    402: "Payment required",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed here",
    409: "That clashes with something",
    413: "Too large",
    422: "Please check your input",
    429: "Too many requests",
    500: "Something went wrong",
}


def _load_viewer(request: Request) -> None:
    """Fill in who is logged in for the header when no page route did (e.g. unknown paths)."""
    if hasattr(request.state, "me") or "session" not in request.scope:
        return
    try:
        with read_only_session(request.app.state.sessionmaker) as session:
            current_account(request, session)
    except Exception:  # the page must render even when the database is the problem
        log.warning("could not load the viewer for an error page", exc_info=True)
        request.state.me = None


def render_error(request: Request, status: int, code: str, detail: str) -> Response:
    if status == 401:
        return redirect(with_query("/login", next=return_path(request)))
    if code == "two_factor_setup_required":
        flash(request, f"{detail}.", "error")
        return redirect("/my/two-factor")
    try:
        _load_viewer(request)
        title = TITLES.get(status, "Something went wrong" if status >= 500 else "Request failed")
        return render(
            request,
            "errors/error.html",
            {"status": status, "code": code, "detail": detail, "title": title},
            status=status,
        )
    except Exception:
        log.exception("the error page itself failed")
        return HTMLResponse(
            f"<!doctype html><title>Error {status}</title><h1>Error {status}</h1>"
            f"<p>{escape(detail)}</p>",
            status_code=status,
        )
