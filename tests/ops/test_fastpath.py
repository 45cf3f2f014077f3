"""The front door (store.frontdoor): the registry's endpoints and the probes reach their route
by a dictionary lookup, with the same headers, limits, errors and metrics as any response."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import Response

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


def test_a_fast_path_that_fails_answers_like_any_route(app: FastAPI) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("broken on purpose")

    app.add_route("/broken-probe", broken, methods=["GET"])
    assert "/broken-probe" in fast_routes(app.routes)
    with TestClient(app, base_url="http://store.test", raise_server_exceptions=False) as client:
        response = client.get("/broken-probe", headers={"X-Request-ID": "req-broken-1"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-request-id"] == "req-broken-1"


def test_a_fast_path_refuses_a_body_over_its_cap(app: FastAPI, client: TestClient) -> None:
    response = client.post(
        "/token",
        content=b"x" * 32,
        headers={"Content-Length": str(10 * 1024 * 1024), "Content-Type": "text/plain"},
    )
    assert response.status_code == 413
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-request-id"]
    secret = app.state.settings.resolved_notify_secret
    streamed = client.post(
        "/registry/events",
        content=iter([b"x" * (1024 * 1024)] * 5),  # chunked: counted as it streams in
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"},
    )
    assert streamed.status_code == 413  # the notifications' cap is 4 MiB
    assert streamed.headers["content-security-policy"] == CSP


def test_a_fast_path_counts_in_the_metrics(client: TestClient) -> None:
    from store.observability import metrics

    def served() -> float:
        metrics.flush()
        labels = {"method": "GET", "route": "/healthz", "status": "200"}
        return metrics.REGISTRY.get_sample_value("store_http_requests_total", labels) or 0.0

    before = served()
    client.get("/healthz")
    client.get("/healthz")
    assert served() == before + 2
