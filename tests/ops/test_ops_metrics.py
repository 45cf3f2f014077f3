"""/metrics: request series by route template, token decisions, webhooks, registry events,
search latency; the label cap; several worker processes added up."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import Counter, parser
from sqlalchemy.orm import Session

from store.billing.runtime import build_billing
from store.observability import metrics
from tests.billing.helpers import WEBHOOK_SECRET, billing_settings, make_event, sign
from tests.factories import make_account, make_org, make_product, paid_tier

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sample(name: str, **labels: str) -> float:
    """A value of this process's registry, with what the process counted added in."""
    metrics.flush()
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_requests_are_counted_by_route_template_not_path(client: TestClient) -> None:
    name = f"nothing-{uuid.uuid4().hex[:8]}"
    client.get(f"/api/v1/products/acme/{name}")
    client.get(f"/no/such/{name}")
    values = scrape(client)
    labels = (("method", "GET"), ("route", "/api/v1/products/{org}/{name}"), ("status", "404"))
    assert values[("store_http_requests_total", labels)] >= 1
    unmatched = (("method", "GET"), ("route", "<unmatched>"), ("status", "404"))
    assert values[("store_http_requests_total", unmatched)] >= 1
    duration = (("method", "GET"), ("route", "/api/v1/products/{org}/{name}"))
    assert values[("store_http_request_duration_seconds_count", duration)] >= 1
    text = client.get("/metrics").text
    assert name not in text  # raw paths never become labels
    assert "store_registry_token_decisions_total" in text  # bound once, exported at zero


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_token_decisions_by_outcome_and_reason(client: TestClient, session: Session) -> None:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    make_product(session, acme, alice, "app", tiers=[paid_tier()])
    # Published with a free public tier: anyone may pull it, anonymous included.
    make_product(
        session, acme, alice, "other", tiers=[{"slug": "free", "billing": "free", "public": True}]
    )
    session.commit()
    name = "store_registry_token_decisions_total"
    before = {
        key: sample(name, outcome=key[0], reason=key[1])
        for key in [
            ("granted", "full"),
            ("granted", "login"),
            ("denied", "login_required"),
            ("denied", "bad_credentials"),
            ("rejected", "invalid_scope"),
        ]
    }
    service = "service=store-registry"
    assert client.get(f"/token?{service}&scope=repository:acme/other:pull").status_code == 200
    assert client.get(f"/token?{service}", headers=_basic("alice", "x" * 12)).status_code == 401
    assert client.get(f"/token?{service}&scope=repository:acme/app:pull").status_code == 401
    # A scope that cannot be parsed is dropped: a token without access, counted as rejected.
    assert client.get(f"/token?{service}&scope=bogus").status_code == 200
    after = {key: sample(name, outcome=key[0], reason=key[1]) for key in before}
    assert {k: after[k] - before[k] for k in before} == {
        ("granted", "full"): 1,
        ("granted", "login"): 1,
        ("denied", "login_required"): 1,
        ("denied", "bad_credentials"): 1,
        ("rejected", "invalid_scope"): 1,
    }


def test_webhook_events_by_type_and_outcome(app: FastAPI, client: TestClient) -> None:
    app.state.billing = build_billing(billing_settings(), app.state.settings)
    name = "store_webhook_events_total"
    ignored = sample(name, type="customer.created", outcome="ignored")
    duplicate = sample(name, type="customer.created", outcome="duplicate")
    bad = sample(name, type="unverified", outcome="bad_signature")

    payload = json.dumps(make_event("customer.created", {"id": "cus_1", "object": "customer"}))
    for _ in range(2):
        response = client.post(
            "/billing/stripe/webhook",
            content=payload,
            headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET)},
        )
        assert response.status_code == 200, response.text
    forged = client.post(
        "/billing/stripe/webhook", content=payload, headers={"Stripe-Signature": sign(payload, "x")}
    )
    assert forged.status_code == 400

    assert sample(name, type="customer.created", outcome="ignored") == ignored + 1
    assert sample(name, type="customer.created", outcome="duplicate") == duplicate + 1
    assert sample(name, type="unverified", outcome="bad_signature") == bad + 1


def _registry_event(action: str, event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": "2026-11-28T17:42:18.681590636Z",
        "action": action,
        "target": {
            "mediaType": MANIFEST,
            "size": 401,
            "digest": "sha256:" + "a" * 64,
            "repository": "acme/metered",
            "tag": "v1",
        },
        "request": {"method": "GET"},
        "actor": {"name": "alice"},
    }


def test_registry_events_by_action_and_outcome(app: FastAPI, client: TestClient) -> None:
    name = "store_registry_events_total"
    keys = [
        ("push", "processed"),
        ("push", "duplicate"),
        ("pull", "processed"),
        ("mount", "ignored"),
    ]
    before = {k: sample(name, action=k[0], outcome=k[1]) for k in keys}
    push = _registry_event("push", str(uuid.uuid4()))
    envelope = {
        "events": [
            push,
            push,
            _registry_event("pull", str(uuid.uuid4())),
            _registry_event("mount", str(uuid.uuid4())),
        ]
    }
    response = client.post(
        "/registry/events",
        content=json.dumps(envelope),
        headers={
            "Content-Type": "application/vnd.docker.distribution.events.v1+json",
            "Authorization": f"Bearer {app.state.settings.resolved_notify_secret}",
        },
    )
    assert response.json() == {"processed": 2, "duplicates": 1, "ignored": 1}
    assert {k: sample(name, action=k[0], outcome=k[1]) - before[k] for k in keys} == {
        k: 1 for k in keys
    }


def test_search_latency_by_backend(client: TestClient, backend: str) -> None:
    name = "store_search_duration_seconds_count"
    before = sample(name, backend=backend)
    assert client.get("/api/v1/search?q=redis").status_code == 200
    assert client.get("/v1/search?q=redis").status_code == 200
    assert sample(name, backend=backend) == before + 2
    assert client.get("/api/v1/search?q=redis&per_page=1000").status_code in (400, 422)
    assert sample(name, backend=backend) == before + 2  # refused queries are not timed


def test_metrics_can_require_a_bearer_token(app: FastAPI, client: TestClient) -> None:
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": "s3cret-scrape"})
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
    assert ok.status_code == 200
    assert client.get("/metrics").headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("peer", "headers", "allowed"),
    [
        ("127.0.0.1", {}, True),
        ("10.1.2.3", {}, True),
        ("::1", {}, True),
        ("8.8.8.8", {}, False),
        ("10.1.2.3", {"X-Forwarded-For": "8.8.8.8"}, False),
        ("127.0.0.1", {"Forwarded": "for=8.8.8.8"}, False),
    ],
)
def test_private_metrics_serve_private_networks_only(
    app: FastAPI, peer: str, headers: dict[str, str], allowed: bool
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"metrics_private": True})
    with TestClient(app, client=(peer, 40000)) as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == (200 if allowed else 403), response.text
    # With a token too, the token opens it from anywhere.
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": "t0ken-t0ken"})
    with TestClient(app, client=(peer, 40000)) as client:
        bearer = {"Authorization": "Bearer t0ken-t0ken", **headers}
        assert client.get("/metrics", headers=bearer).status_code == 200
        assert client.get("/metrics", headers=headers).status_code == (200 if allowed else 401)


def test_label_sets_from_outside_are_capped() -> None:
    counter = Counter("ops_test_capped", "test", ["kind"], registry=None)
    children = metrics._Children(counter, limit=3)
    for i in range(10):
        children.get(f"kind-{i}").inc()
    values = {
        s.labels["kind"]: s.value for s in counter.collect()[0].samples if s.name.endswith("_total")
    }
    assert values == {"kind-0": 1, "kind-1": 1, "kind-2": 1, "other": 7}
    assert metrics._label(None) == "unknown"
    assert metrics._label("x" * 100) == "x" * 64


_WORKER = """
import sys
from store.observability import metrics
for _ in range(int(sys.argv[1])):
    metrics.token_decision("granted", "full")
metrics.http_request("GET", "/token", 200, 0.004)
"""
_SCRAPE = """
import sys
from store.observability import metrics
sys.stdout.write(metrics.exposition().decode())
"""


def test_worker_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    metrics.prepare_multiprocess_dir(str(directory))
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory)}
    for count in (2, 3):  # two "workers"
        subprocess.run([sys.executable, "-c", _WORKER, str(count)], env=env, check=True)
    out = subprocess.run(
        [sys.executable, "-c", _SCRAPE], env=env, check=True, capture_output=True, text=True
    ).stdout
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(out)
        for s in family.samples
    }
    granted = (("outcome", "granted"), ("reason", "full"))
    assert values[("store_registry_token_decisions_total", granted)] == 5
    route = (("method", "GET"), ("route", "/token"))
    assert values[("store_http_request_duration_seconds_count", route)] == 2
    # A new run starts from zero: stale files are removed first.
    metrics.prepare_multiprocess_dir(str(directory))
    assert not list(directory.glob("*.db"))


@pytest.mark.parametrize("n", [20000])
def test_recording_a_token_decision_is_cheap(n: int) -> None:
    """The /token path pays for one counter increment (about a microsecond; the bound is
    loose so that a loaded CI machine passes)."""
    import time

    started = time.perf_counter()
    for _ in range(n):
        metrics.token_decision("granted", "full")
    per_call = (time.perf_counter() - started) / n
    assert per_call < 20e-6


def test_timed_search_labels_by_the_database_dialect() -> None:
    class Dialect:
        name = "postgresql"

    class Bind:
        dialect = Dialect()

    class FakeSession:
        def get_bind(self) -> Bind:
            return Bind()

    @metrics.timed_search
    def search(session: Any, *, q: str) -> str:
        return q.upper()

    name = "store_search_duration_seconds_count"
    before = sample(name, backend="postgresql")
    assert search(FakeSession(), q="redis") == "REDIS"
    assert sample(name, backend="postgresql") == before + 1


def test_serve_turns_on_multiprocess_mode_for_several_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from store.config import Settings
    from store.observability.serving import uvicorn_options

    monkeypatch.setenv(metrics.MULTIPROC_ENV, "")  # restored (unset) after the test
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    settings = Settings(_env_file=None, data_dir=tmp_path, environment="production")  # type: ignore[call-arg]

    single = uvicorn_options(settings, workers=1, log_level="info")
    assert metrics.MULTIPROC_ENV not in os.environ
    assert single["access_log"] is False
    formatter = single["log_config"]["formatters"]["store"]["()"]
    assert formatter == "store.observability.logging.JsonFormatter"

    uvicorn_options(settings, workers=3, log_level="info")
    made = Path(os.environ[metrics.MULTIPROC_ENV])
    assert made.is_dir() and made.name.startswith("store-metrics-")

    mine = tmp_path / "prom"
    mine.mkdir()
    (mine / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(mine))
    uvicorn_options(settings, workers=2, log_level="info")
    assert os.environ[metrics.MULTIPROC_ENV] == str(mine)
    assert not (mine / "counter_123.db").exists()
