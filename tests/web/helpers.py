"""Helpers for page tests: a browser-like client, CSRF tokens read from forms, logging in."""

from __future__ import annotations

import re
from typing import Any

import httpx2 as httpx  # what starlette's TestClient returns
from fastapi.testclient import TestClient

from tests.factories import PASSWORD

HTML = {"accept": "text/html,application/xhtml+xml"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def submit(
    client: TestClient,
    page: str,
    action: str,
    data: dict[str, Any] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Open ``page`` like a browser, then post ``data`` to ``action`` with the page's token."""
    opened = client.get(page)
    assert opened.status_code == 200, (page, opened.status_code)
    body = {**(data or {}), "csrf_token": csrf_of(opened.text)}
    return client.post(action, data=body, **kwargs)


def login(client: TestClient, username: str, password: str = PASSWORD) -> httpx.Response:
    response = submit(client, "/login", "/login", {"login": username, "password": password})
    assert response.status_code == 200, response.text
    assert f"Logged in as {username}" in response.text
    return response


def is_html(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("text/html")
