"""The one place where errors become HTTP responses.

JSON (`{"error": code, "detail": message}`) for the API and machine clients; an HTML
page in the store's style for browsers, rendered by the web layer's registered renderer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from store.errors import StoreError

log = logging.getLogger("store.errors")

HtmlRenderer = Callable[[Request, int, str, str], Response]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
}


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(
        ("/api/", "/v1/", "/v2/", "/token", "/registry/", "/billing/", "/.well-known/")
    ):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    renderer: HtmlRenderer | None = getattr(request.app.state, "html_error_renderer", None)
    if renderer is not None and wants_html(request):
        response = renderer(request, status, code, detail)
        if headers:
            response.headers.update(headers)
        return response
    body: dict[str, Any] = {"error": code, "detail": detail}
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    fields = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form")]
        fields.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    if not fields:
        return "The request is not valid", fields
    first = fields[0]
    return f"{first['field']}: {first['message']}", fields


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        headers = exc.extra.pop("headers", None) if exc.extra else None
        return error_response(request, exc.status_code, exc.code, exc.detail, exc.extra, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        detail, fields = _validation_message(exc)
        return error_response(request, 422, "invalid", detail, {"fields": fields})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "There is nothing at this address"
        return error_response(request, exc.status_code, code, detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request, 500, "internal_error", "Something went wrong on our side; it was logged."
        )
