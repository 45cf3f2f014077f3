"""HTML pages of the storefront."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Register page routes, sessions, CSRF and the HTML error renderer."""
