"""Exact-path dispatch of the plain routes (store.fastpath): the registry's endpoints and the
probes reach their route by a dictionary lookup, with the same headers as any response."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from store.fastpath import fast_routes
from store.security_headers import CSP


def test_the_hot_plain_routes_are_dispatched_by_path(app: FastAPI) -> None:
    routes = fast_routes(app.routes)
    assert {"/token", "/registry/events", "/healthz", "/readyz", "/metrics"} <= set(routes)
    # FastAPI's routes (dependency injection, sessions) never take the fast path.
    assert "/api/v1/products" not in routes
    assert all("{" not in path for path in routes)


def test_a_fast_path_answers_like_any_route(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-request-id"]
    wrong_method = client.post("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    assert wrong_method.headers["content-security-policy"] == CSP
