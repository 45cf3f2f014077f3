"""End to end: the store is the token server of Debian's docker-registry, driven by skopeo.

One scenario in steps sharing one environment (store under uvicorn + registry, on free
127.0.0.1 ports, stopped by PID). Nothing outside 127.0.0.1 is contacted.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.accounts import service as accounts
from store.db import make_engine, make_sessionmaker, session_scope
from store.licensing import entitlements
from store.registry.models import HubRepository, HubTag
from tests.e2e.registry_env import (
    MISSING,
    Process,
    Skopeo,
    build_oci_layout,
    clean_env,
    free_port,
    python_cli,
    read_oci_file,
    start,
    wait_http,
)
from tests.factories import PASSWORD, make_account, make_org, make_product, paid_tier, tier_of

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} installed"),
]

CONTENT = b"hello from the software store, v1\n"


@dataclass
class Env:
    root: Path
    store_url: str
    registry: str  # host:port
    engine: Engine
    factory: sessionmaker[Session]
    skopeo: Skopeo
    robot: str  # acme robot token (pull, push)
    layout: Path
    store: Process
    docker_registry: Process
    pulls: dict[str, int]

    def pull(
        self, repo: str, creds: str | None = None, authfile: Path | None = None, tag: str = "v1"
    ):
        dest = self.root / "out" / f"{repo.replace('/', '_')}-{time.monotonic_ns()}"
        dest.parent.mkdir(exist_ok=True)
        result = self.skopeo.pull(repo, tag, dest, creds=creds, authfile=authfile)
        if result.returncode == 0:
            self.pulls[repo] = self.pulls.get(repo, 0) + 1
        return result, dest

    def diagnostics(self) -> str:
        return f"--- store log\n{self.store.log()[-3000:]}\n--- registry log\n{self.docker_registry.log()[-3000:]}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("registry-e2e")
    data_dir = root / "store-data"
    store_port, registry_port = free_port(), free_port()
    store_url = f"http://127.0.0.1:{store_port}"
    registry = f"127.0.0.1:{registry_port}"
    store_env = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_SECRET_KEY": "e2e-secret-key-0123456789abcdef",
            "STORE_PUBLIC_URL": store_url,
            "STORE_REGISTRY_URL": f"http://{registry}",
            "STORE_ENVIRONMENT": "test",
        }
    )
    data_dir.mkdir()
    engine = make_engine(f"sqlite:///{data_dir / 'store.db'}")
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        robot = _seed(session)
    layout = root / "layout"
    build_oci_layout(layout, tag="v1", files={"hello.txt": CONTENT})

    written = python_cli(
        "registry",
        "config",
        "--registry-url",
        f"http://{registry}",
        "--out",
        str(root / "registry"),
        "--json",
        env=store_env,
    )
    assert written.returncode == 0, written.stderr
    logs = root / "logs"
    logs.mkdir()
    processes: list[Process] = []
    try:
        store = start(
            "store",
            [
                "python",
                "-m",
                "uvicorn",
                "store.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(store_port),
                "--log-level",
                "warning",
            ],
            env=store_env,
            cwd=root,
            logs=logs,
        )
        processes.append(store)
        wait_http(f"{store_url}/token", proc=store.proc)
        reg = start(
            "registry",
            ["docker-registry", "serve", str(root / "registry" / "config.yml")],
            env=clean_env({}),
            cwd=root / "registry",
            logs=logs,
        )
        processes.append(reg)
        wait_http(f"http://{registry}/v2/", proc=reg.proc)
        home = root / "home"
        home.mkdir()
        yield Env(
            root,
            store_url,
            registry,
            engine,
            factory,
            Skopeo(registry, home),
            robot,
            layout,
            store,
            reg,
            {},
        )
    finally:
        for process in reversed(processes):
            process.stop()
        engine.dispose()


def _seed(session: Session) -> str:
    alice = make_account(session, "alice")  # publisher owner
    acme = make_org(session, alice, "acme")
    make_account(session, "bob")  # customer
    carol = make_account(session, "carol")
    make_org(session, carol, "other")
    make_product(session, acme, alice, "app", tiers=[paid_tier()])  # paid: needs a license
    make_product(session, acme, alice, "freebie", tiers=[{"slug": "free", "billing": "free"}])
    issued = accounts.create_token(
        session, kind="robot", name="ci", scopes=["pull", "push"], created_by=alice, org=acme
    )
    return issued.secret


def _ok(result, env: Env) -> None:
    assert result.returncode == 0, f"{result.stderr}\n{env.diagnostics()}"


def _hub(env: Env, name: str) -> HubRepository | None:
    with env.factory() as session:
        return session.scalar(select(HubRepository).where(HubRepository.name == name))


def _wait_pull_count(env: Env, name: str, expected: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        repo = _hub(env, name)
        count = repo.pull_count if repo else 0
        if count >= expected:
            return count
        time.sleep(0.2)
    return count


def test_robot_pushes_and_hub_records_it(env: Env) -> None:
    for repo in ("acme/app", "acme/freebie", "acme/tools"):
        _ok(env.skopeo.push(env.layout, "v1", repo, f"ci:{env.robot}"), env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (_hub(env, "acme/tools") and _hub(env, "acme/app")):
        time.sleep(0.2)
    with env.factory() as session:
        app = session.scalar(select(HubRepository).where(HubRepository.name == "acme/app"))
        assert app is not None, env.diagnostics()
        assert app.private is True  # a paid product
        assert app.last_pushed_at is not None
        tag = session.scalar(
            select(HubTag).where(HubTag.repository_id == app.id, HubTag.name == "v1")
        )
        assert tag is not None and tag.digest.startswith("sha256:")
        assert tag.pushed_by.startswith("robot:acme:")
        tools = session.scalar(select(HubRepository).where(HubRepository.name == "acme/tools"))
        assert tools is not None and tools.private is False  # no product: public


def test_push_to_another_namespace_is_refused(env: Env) -> None:
    result = env.skopeo.push(env.layout, "v1", "other/app", f"ci:{env.robot}")
    assert result.returncode != 0
    assert "denied" in result.stderr or "unauthorized" in result.stderr, result.stderr


def test_customer_without_entitlement_is_refused_with_reason(env: Env) -> None:
    result, _ = env.pull("acme/app", creds=f"bob:{PASSWORD}")
    assert result.returncode != 0
    assert "no license for acme/app" in result.stderr, result.stderr
    assert f"{env.store_url}/products/acme/app" in result.stderr


def test_wrong_password_is_unauthorized(env: Env) -> None:
    result, _ = env.pull("acme/app", creds="bob:not-the-password")
    assert result.returncode != 0
    assert "invalid username/password" in result.stderr and "bad credentials" in result.stderr


def test_grant_then_pull_then_revoke(env: Env) -> None:
    with session_scope(env.factory) as session:
        alice = accounts.get_account_by_username(session, "alice")
        bob = accounts.get_account_by_username(session, "bob")
        from store.catalog import service as catalog

        product = catalog.get_product_by_repository(session, "acme/app")
        grant = entitlements.grant(session, actor=alice, tier=tier_of(product, "pro"), account=bob)
        grant_id = grant.id
    result, dest = env.pull("acme/app", creds=f"bob:{PASSWORD}")
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT
    with session_scope(env.factory) as session:
        alice = accounts.get_account_by_username(session, "alice")
        entitlement = entitlements.get_entitlement(session, grant_id)
        entitlements.revoke(session, entitlement=entitlement, actor=alice, reason="chargeback")
    result, _ = env.pull("acme/app", creds=f"bob:{PASSWORD}")
    assert result.returncode != 0
    assert "revoked" in result.stderr, result.stderr
    assert f"{env.store_url}/products/acme/app" in result.stderr


def test_get_free_tier_then_pull(env: Env) -> None:
    result, _ = env.pull("acme/freebie", creds=f"bob:{PASSWORD}")
    assert result.returncode != 0  # free, but not marked public: "Get" it first
    with session_scope(env.factory) as session:
        bob = accounts.get_account_by_username(session, "bob")
        token = accounts.create_token(
            session, kind="personal", name="api", scopes=["api", "pull"], created_by=bob
        ).secret
    response = httpx.post(
        f"{env.store_url}/api/v1/products/acme/freebie/tiers/free/get",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    result, dest = env.pull("acme/freebie", creds=f"bob:{token}")  # personal access token
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT


def test_anonymous_pull_of_public_repository(env: Env) -> None:
    result, dest = env.pull("acme/tools")
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT
    result, _ = env.pull("acme/app")
    assert result.returncode != 0
    assert "Log in to pull acme/app" in result.stderr, result.stderr


def test_refresh_token_login(env: Env) -> None:
    response = httpx.post(
        f"{env.store_url}/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": PASSWORD,
            "service": "store-registry",
            "client_id": "e2e",
            "access_type": "offline",
        },
    )
    assert response.status_code == 200, response.text
    refresh = response.json()["refresh_token"]
    authfile = env.root / "auth-refresh.json"
    authfile.write_text(
        json.dumps(
            {
                "auths": {
                    env.registry: {
                        "auth": base64.b64encode(b"alice:").decode(),
                        "identitytoken": refresh,
                    }
                }
            }
        )
    )
    # skopeo sends a chunked OAuth2 POST grant_type=refresh_token with the identity token.
    result, dest = env.pull("acme/app", authfile=authfile)
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT


def test_pull_counts_match_the_pulls_made(env: Env) -> None:
    assert env.pulls.get("acme/app") == 2  # bob once (granted), alice once (refresh token)
    for name, expected in env.pulls.items():
        assert _wait_pull_count(env, name, expected) == expected, env.diagnostics()
    time.sleep(1.5)  # retries or late duplicates would show up as over-counting
    for name, expected in env.pulls.items():
        repo = _hub(env, name)
        assert repo is not None and repo.pull_count == expected, (name, repo and repo.pull_count)


def test_sync_reconciles_from_catalog(env: Env) -> None:
    with session_scope(env.factory) as session:
        tools = session.scalar(select(HubRepository).where(HubRepository.name == "acme/tools"))
        assert tools is not None
        for tag in list(tools.tags):
            session.delete(tag)
    store_env = clean_env(
        {
            "STORE_DATA_DIR": str(env.root / "store-data"),
            "STORE_SECRET_KEY": "e2e-secret-key-0123456789abcdef",
            "STORE_PUBLIC_URL": env.store_url,
            "STORE_REGISTRY_URL": f"http://{env.registry}",
        }
    )
    result = python_cli("registry", "sync", "--json", env=store_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["repositories"] == 3 and report["tags_added"] == 1
    with env.factory() as session:
        tools = session.scalar(select(HubRepository).where(HubRepository.name == "acme/tools"))
        assert tools is not None and [t.name for t in tools.tags] == ["v1"]
