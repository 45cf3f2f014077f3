"""A key rotation made on one host is picked up by the other (two `store serve` processes on
one PostgreSQL database, a real docker-registry verifying their tokens).

Registry keys: rotated (published), the bundle rewritten and the registry restarted, then
activated through host A's environment: host B signs with the new key within
``STORE_KEYS_REFRESH_SECONDS``, and the registry accepts the tokens of both hosts, old key
and new. License keys sign at once: both hosts sign with the new key within the same bound,
and a license signed by a key host B has not loaded yet is accepted there at once.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope
from store.keys.service import KeyRing
from store.licensing import entitlements
from store.licensing import service as licensing
from tests.e2e.registry_env import clean_env, free_port, python_cli, start, wait_http
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.hardening.serving import Served, store_serve
from tests.pg import PG_URL, scratch_database

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)"),
]

SECRET = "hardening-test-secret-0123456789"  # what tests.hardening.serving gives each host
REFRESH_S = 2
BOUND_S = REFRESH_S + 8  # the setting, plus slack for a loaded machine


def _kid(jwt: str) -> str:
    header = jwt.split(".", 1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def _token(host: Served) -> str:
    answer = httpx.get(f"{host.base}/token", params={"service": "store-registry"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def _signers(host: Served) -> dict[str, str]:
    """The key each purpose signs with now, as the host's /readyz reports it."""
    answer = httpx.get(f"{host.base}/readyz", timeout=30)
    assert answer.status_code == 200, answer.text
    detail = answer.json()["checks"]["keys"]["detail"]
    return dict(part.split(" ", 1) for part in detail.split("; "))


def _cli(env: dict[str, str], *args: str) -> Any:
    done = python_cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _until(what: str, check: Any) -> float:
    """Seconds until ``check()`` holds (fails after BOUND_S)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < BOUND_S, f"{what}: not within {BOUND_S} s"
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_database("rotation", migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def hosts(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    env = {"STORE_KEYS_REFRESH_SECONDS": str(REFRESH_S)}
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                store_serve(tmp_path_factory.mktemp(f"host{i}"), database, workers=2, env=env)
            )
            for i in range(2)
        ]


def _host_env(database: str, data_dir: Path) -> dict[str, str]:
    """Host A's environment, for the operator's CLI commands."""
    return clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_DATABASE_URL": database,
            "STORE_SECRET_KEY": SECRET,
            "STORE_ENVIRONMENT": "test",
        }
    )


def _registry_accepts(registry: str, token: str) -> bool:
    answer = httpx.get(
        f"http://{registry}/v2/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return answer.status_code == 200


def test_a_registry_key_activated_on_one_host_signs_on_both(
    hosts: list[Served], database: str, tmp_path: Path
) -> None:
    a, b = hosts
    old = _kid(_token(a))
    assert _kid(_token(b)) == old
    env = _host_env(database, tmp_path / "operator")
    new = _cli(env, "keys", "rotate", "--purpose", "registry")["kid"]
    # published, not signing: both hosts keep signing with the old key
    time.sleep(REFRESH_S + 0.5)
    assert {_kid(_token(h)) for h in hosts for _ in range(4)} == {old}
    registry = f"127.0.0.1:{free_port()}"
    written = _cli(
        env, "registry", "config", "--registry-url", f"http://{registry}",
        "--out", str(tmp_path / "registry"),
    )  # fmt: skip
    # Both keys are trusted. (Two hosts starting at one instant on a new database may each
    # make a first key; the one that lost the race is trusted as well, still unretired.)
    assert {old, new} <= set(written["trusted_kids"])
    process = start(
        "registry",
        ["docker-registry", "serve", str(tmp_path / "registry" / "config.yml")],
        env=clean_env({}),
        cwd=tmp_path / "registry",
        logs=tmp_path,
    )
    try:
        wait_http(f"http://{registry}/v2/", proc=process.proc)
        before = [_token(a), _token(b)]
        _cli(env, "keys", "activate", new)
        took = _until(
            "host B signs with the new key",
            lambda: all(_kid(_token(b)) == new for _ in range(4)),
        )
        _until("host A signs with the new key", lambda: _kid(_token(a)) == new)
        # every worker of both hosts has switched once the bound has passed
        time.sleep(max(0.0, REFRESH_S + 0.5 - took))
        after = [_token(h) for h in hosts for _ in range(6)]
        assert {_kid(t) for t in after} == {new}
        assert {_signers(h)["registry"] for h in hosts for _ in range(4)} == {new}
        # the registry trusts both keys: tokens signed before and after verify there
        assert all(_registry_accepts(registry, t) for t in before + after)
        assert not _registry_accepts(registry, after[0][:-4] + "AAAA")
    finally:
        process.stop()


def test_a_license_key_rotated_on_one_host_signs_on_both(
    hosts: list[Served], database: str, tmp_path: Path
) -> None:
    a, b = hosts
    old = _signers(a)["license"]
    env = _host_env(database, tmp_path / "operator")
    new = _cli(env, "keys", "rotate", "--purpose", "license")["kid"]
    assert new != old
    # JWKS is read from the database: both hosts list the new key at once
    for host in hosts:
        jwks = httpx.get(f"{host.base}/.well-known/jwks.json", timeout=30).json()
        assert {old, new} <= {k["kid"] for k in jwks["keys"]}
    # A license signed with the new key elsewhere (here: this process) is accepted by
    # host B before its own signer has moved: an unknown key id makes it read the keys.
    from store import security

    security.use_cheap_hashing_for_tests()
    engine = make_engine(database)
    try:
        factory = make_sessionmaker(engine)
        settings = Settings(
            data_dir=tmp_path / "operator",
            database_url=database,
            secret_key=SECRET,
            environment="test",
        )
        with session_scope(factory) as session:
            owner = make_account(session)
            org = make_org(session, owner, "rotate")
            product = make_product(
                session, org, owner, "app", tiers=[paid_tier("pro", 900, "month")]
            )
            buyer = make_account(session)
            entitlement = entitlements.grant(
                session, actor=owner, tier=tier_of(product, "pro"), account=buyer
            )
            ring = KeyRing(lambda: factory, SECRET)
            document = licensing.issue_license(session, ring, settings, entitlement)
            assert document.kid == new
            token = document.token
    finally:
        engine.dispose()
    credential = base64.b64encode(f"license:{token}".encode()).decode()
    scope = "repository:rotate/app:pull"
    answer = httpx.get(
        f"{b.base}/token",
        params={"service": "store-registry", "scope": scope},
        headers={"Authorization": f"Basic {credential}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    claims = answer.json()["token"].split(".")[1]
    access = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["access"]
    assert access == [{"type": "repository", "name": "rotate/app", "actions": ["pull"]}]
    # and both hosts sign licenses with the new key within the bound
    for host in (b, a):
        _until(
            f"{host.base} signs licenses with the new key",
            lambda host=host: all(_signers(host)["license"] == new for _ in range(4)),
        )
