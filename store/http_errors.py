"""The one place where errors become HTTP responses.

JSON (`{"error": code, "detail": message}`, with `"field"` naming the input at fault when
the error says) for the API and machine clients; an HTML
page in the store's style for browsers, rendered by the web layer's registered renderer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from store.db import DatabaseBusy
from store.errors import StoreError
from store.observability.logging import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger("store.errors")

API_CHALLENGE = 'Bearer realm="store"'
HtmlRenderer = Callable[[Request, int, str, str], Response]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    402: "payment_required",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "busy",
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
    if status == 401 and not any(k.lower() == "www-authenticate" for k in headers or {}):
        # RFC 9110: a 401 names how to authenticate. The JSON API takes bearer tokens.
        headers = {**(headers or {}), "WWW-Authenticate": API_CHALLENGE}
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


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. not_found"},
        "detail": {"type": "string", "description": "A message for people"},
        "field": {
            "description": "The input the error is about (its name in the request), or a "
            "list of them when the error is about their combination",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        },
    },
}
_VALIDATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ValidationError",
    "required": ["error", "detail"],  # "fields" when the request's shape was wrong
    "properties": {
        **_ERROR_SCHEMA["properties"],
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
# Every operation may answer these (bad token, no right, nothing there, limits...).
# 503: the store is busy (write turns), or a service it depends on (the registry, the
# payment gateway) did not answer; either may happen on any operation.
_DOCUMENTED_ERRORS = (400, 401, 402, 403, 404, 405, 409, 413, 415, 429, 503)


_ERROR_DESCRIPTIONS = {503: "busy, or a service the store depends on is unavailable"}


def _document_errors(app: FastAPI) -> None:
    """Make the OpenAPI schema tell the truth about errors: the store's ``{"error",
    "detail"}`` shape (422 with ``fields``) instead of FastAPI's default 422 body, and the
    error statuses every operation can answer."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = _ERROR_SCHEMA
        components["HTTPValidationError"] = _VALIDATION_SCHEMA
        ref = {"$ref": "#/components/schemas/Error"}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for status in _DOCUMENTED_ERRORS:
                    responses.setdefault(
                        str(status),
                        {
                            "description": _ERROR_DESCRIPTIONS.get(
                                status, _HTTP_CODES.get(status, "error").replace("_", " ")
                            ),
                            "content": {"application/json": {"schema": ref}},
                        },
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _busy_response(request: Request) -> Response:
    return error_response(
        request,
        503,
        "busy",
        "The store is busy; try again in a moment.",
        headers={"Retry-After": "1"},
    )


# PostgreSQL's SQLSTATEs of a transaction it rolled back for the client to run again:
# deadlock_detected, serialization_failure.
_TRY_AGAIN = ("40P01", "40001")


def install_error_handlers(app: FastAPI) -> None:
    _document_errors(app)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        headers = exc.extra.pop("headers", None) if exc.extra else None
        extra = exc.extra
        if exc.field is not None:
            field = exc.field if isinstance(exc.field, str) else list(exc.field)
            extra = {**extra, "field": field}
        return error_response(request, exc.status_code, exc.code, exc.detail, extra, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        detail, fields = _validation_message(exc)
        extra: dict[str, Any] = {"fields": fields}
        names = list(dict.fromkeys(f["field"] for f in fields))
        if names:
            extra["field"] = names[0] if len(names) == 1 else names
        return error_response(request, 422, "invalid", detail, extra)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> Response:
        # The database refused a value the validation let through: PostgreSQL text cannot
        # hold NUL characters, numbers have ranges. The client's input, not a fault here
        # (the transaction is rolled back with the request).
        log.info(
            "database refused a value on %s %s: %s", request.method, request.url.path, exc.orig
        )
        if "NUL" in str(exc.orig):
            detail = "Text cannot contain NUL (0x00) characters"
        else:
            detail = "A value cannot be stored (out of range or malformed)"
        return error_response(request, 422, "invalid", detail)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> Response:
        # A date or number from the client beyond what Python or the database can hold
        # (a year-9999 date plus a grace period): the client's input, not a fault here.
        log.info("value out of range on %s %s: %s", request.method, request.url.path, exc)
        return error_response(request, 422, "invalid", "A date or number is out of range")

    @app.exception_handler(DatabaseBusy)
    async def _busy(request: Request, exc: DatabaseBusy) -> Response:
        log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
        return _busy_response(request)

    @app.exception_handler(OperationalError)
    async def _operational(request: Request, exc: OperationalError) -> Response:
        # SQLite's write lock held by another process for longer than busy_timeout: the
        # store is overloaded, not broken. PostgreSQL ended the transaction to break a
        # deadlock with another one (or could not serialise it): nothing of it was written
        # and the same request again goes through. Anything else is a fault.
        if "database is locked" in str(exc.orig):
            log.warning("database locked on %s %s", request.method, request.url.path)
            return _busy_response(request)
        if getattr(exc.orig, "sqlstate", None) in _TRY_AGAIN:
            log.warning("transaction ended on %s %s: %s", request.method, request.url.path, exc)
            return _busy_response(request)
        return await _unexpected(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "There is nothing at this address"
        headers = dict(exc.headers) if exc.headers else None
        return error_response(request, exc.status_code, code, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Starlette sends this response from its outermost middleware, outside the store's
        # own (request id, security headers), so it carries their headers itself.
        headers = dict(getattr(request.app.state, "error_headers", {}))
        request_id = current_request_id()
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        return error_response(
            request,
            500,
            "internal_error",
            "Something went wrong on our side; it was logged.",
            headers=headers,
        )
