"""Pages and files at fixed addresses, from the store's own static files.

``/api/docs`` is Swagger UI, vendored (``scripts/vendor-swagger-ui VERSION``) so the page
loads nothing from another origin and runs no inline script: the store's ordinary
Content-Security-Policy holds. ``/favicon.ico`` is for clients that ask for it by that name
(pages link the SVG icon)."""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse

from store import STATIC_DIR

SWAGGER_UI_VERSION = "5.35.0"
ASSETS = f"/static/vendor/swagger-ui-{SWAGGER_UI_VERSION}"


def page(openapi_url: str, title: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — API</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
</head>
<body data-openapi-url="{escape(openapi_url)}">
<main id="swagger-ui"></main>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""


async def api_docs(request: Request) -> HTMLResponse:
    app = request.app
    return HTMLResponse(page(app.openapi_url, app.title))


async def favicon(request: Request) -> FileResponse:
    return FileResponse(
        STATIC_DIR / "favicon.ico",
        media_type="image/vnd.microsoft.icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )
