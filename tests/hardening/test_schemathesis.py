"""Schemathesis against the store's own OpenAPI schema, in process (ASGI): no 5xx, and every
response matches the schema (status, content type, body, headers).

Seeded first (an administrator with an API token, a publisher with products and tiers, an
entitlement), so operations with path parameters also reach real objects: half the cases
have their path parameters replaced by the seeded names and ids. Bounded: a few examples per
operation, well under a minute in all.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import checks
from sqlalchemy.orm import Session

from store.licensing import entitlements
from tests.factories import api_token, make_account, make_admin, make_org, make_product, paid_tier

MAX_EXAMPLES = 4
# The same examples on every run, so a test run (CI) is reproducible; STORE_FUZZ=1 draws new
# ones each run, to explore (that is how NUL characters in text were found on PostgreSQL).
EXPLORE = os.environ.get("STORE_FUZZ") == "1"
# What the issue asks: no 5xx, and responses (status, content type, headers, body) as the
# schema says. Not run: positive_data_acceptance / negative_data_rejection (the services
# validate beyond what the schema can say, e.g. registry name grammar, and say so with a
# documented 422) and the 405 Allow-header probes.


def not_a_server_error_but_a_named_outage(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except the documented 503 that names a service the store depends on as
    unavailable: this run has no registry, so deleting or reading a repository's tags
    answers that (the registry e2e tests cover those operations)."""
    if response.status_code == 503 and response.json().get("error") == "unavailable":
        return None
    return checks.not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_but_a_named_outage,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def seeded(app: FastAPI, session: Session) -> dict[str, Any]:
    admin = make_admin(session, "schema-admin")
    customer = make_account(session, "schema-customer")
    org = make_org(session, admin, "acme")
    product = make_product(session, org, admin, "app", tiers=[paid_tier("pro")])
    make_product(session, org, admin, "free-app")
    tier = product.tiers[0]
    entitlement = entitlements.grant(
        session, actor=admin, tier=tier, account=customer, reason="schema"
    )
    token = api_token(session, admin)
    session.commit()
    return {
        "token": token,
        "values": {
            "org": "acme",
            "slug": "acme",
            "name": "app",
            "product": "app",
            "username": "schema-customer",
            "tier": tier.slug,
            "tier_id": str(tier.id),
            "entitlement_id": str(entitlement.id),
            "product_id": str(product.id),
        },
    }


@pytest.fixture
def api_schema(app: FastAPI, seeded: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_asgi(app.openapi_url or "/api/v1/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES * (10 if EXPLORE else 1),
    derandomize=not EXPLORE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: Any, seeded: dict[str, Any]) -> None:
    values = seeded["values"]
    if case.path_parameters and hash(repr(case.path_parameters)) % 2 == 0:
        for name in case.path_parameters:
            if name in values:
                case.path_parameters[name] = values[name]
    headers = {"Authorization": f"Bearer {seeded['token']}"}
    if case.method.upper() == "DELETE" and "tokens" in case.path:
        headers = {}  # never revoke the token the run authenticates with
    case.call_and_validate(headers=headers, checks=CHECKS)
