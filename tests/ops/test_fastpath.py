"""The front door (store.frontdoor): the registry's endpoints and the probes reach their route
by a dictionary lookup, with the same headers, limits, errors and metrics as any response."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from store.config import Settings
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


def test_deferred_routes_are_included_by_the_first_request_the_front_door_does_not_serve(
    app: FastAPI,
) -> None:
    """A lean worker (store.app.create_app(lean=True)) includes its pages and JSON API when
    the first request for a route other than the front door's arrives, once; a plain route
    at a fixed path among them is then served by the front door like any other."""
    from store.frontdoor import StoreApp

    assert isinstance(app, StoreApp)
    included: list[str] = []
    settled: list[str] = []

    async def late_probe(request: Request) -> Response:
        return Response("late probe")

    def include(app: FastAPI) -> None:
        included.append("routes")
        app.add_route("/late-probe", late_probe, methods=["GET"])
        app.add_api_route("/late-page/{name}", lambda name: {"name": name}, methods=["GET"])

    app.defer_routes(include, then=lambda: settled.append("heap"))
    with TestClient(app, base_url="http://store.test") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/token?service=store-registry").status_code == 200  # anonymous
        assert included == [] and settled == []
        page = client.get("/late-page/x")
        assert (page.status_code, page.json()) == (200, {"name": "x"})
        assert included == ["routes"] and settled == ["heap"]
        assert client.get("/late-page/y").json() == {"name": "y"}
        probe = client.get("/late-probe")
        assert (probe.status_code, probe.text) == (200, "late probe")
        assert probe.headers["content-security-policy"] == CSP
    assert included == ["routes"]
    assert app._fast is not None and "/late-probe" in app._fast


def test_the_openapi_document_of_a_lean_app_describes_every_route(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Asked first, before any page or API request included the deferred routes, the
    OpenAPI document still lists the JSON API (and is not cached without it)."""
    from store.app import create_app

    lean = create_app(settings, migrate=False, lean=True)
    lean.state.engine.dispose()
    lean.state.sessionmaker = session_factory
    with TestClient(lean) as client:
        paths = client.get("/api/v1/openapi.json").json()["paths"]
        assert "/api/v1/accounts" in paths and len(paths) > 50, sorted(paths)
        assert client.get("/api/v1/openapi.json").json()["paths"] == paths
