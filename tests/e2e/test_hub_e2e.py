"""End to end: personal namespaces and hub repositories with Debian's docker-registry and
skopeo, the store as the token server. Steps share one environment (store under uvicorn +
registry on free 127.0.0.1 ports, stopped by PID); nothing outside 127.0.0.1 is contacted.
"""

from __future__ import annotations

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
from store.registry.models import HubRepository, HubTag
from tests.e2e.registry_env import (
    MISSING,
    Process,
    Skopeo,
    build_oci_layout,
    clean_env,
    free_port,
    read_oci_file,
    running_stack,
)
from tests.factories import PASSWORD, make_account, make_org

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} installed"),
]

CONTENT = b"hello from alice's namespace\n"


@dataclass
class Env:
    root: Path
    store_url: str
    registry: str  # host:port
    engine: Engine
    factory: sessionmaker[Session]
    skopeo: Skopeo
    layout: Path
    tokens: dict[str, str]  # alice's personal tokens by scope set: "push", "pull", "api"
    store: Process
    docker_registry: Process

    def diagnostics(self) -> str:
        return (
            f"--- store log\n{self.store.log()[-3000:]}\n"
            f"--- registry log\n{self.docker_registry.log()[-3000:]}"
        )

    def pull(self, repo: str, tag: str, creds: str | None = None):
        dest = self.root / "out" / f"{repo.replace('/', '_')}-{time.monotonic_ns()}"
        dest.parent.mkdir(exist_ok=True)
        return self.skopeo.pull(repo, tag, dest, creds=creds), dest

    def hub(self, name: str) -> HubRepository | None:
        with self.factory() as session:
            return session.scalar(select(HubRepository).where(HubRepository.name == name))

    def wait_tags(self, name: str, tags: set[str], timeout: float = 15.0) -> set[str]:
        deadline = time.monotonic() + timeout
        found: set[str] = set()
        while time.monotonic() < deadline:
            with self.factory() as session:
                found = set(
                    session.scalars(
                        select(HubTag.name)
                        .join(HubRepository, HubRepository.id == HubTag.repository_id)
                        .where(HubRepository.name == name)
                    )
                )
            if tags <= found:
                return found
            time.sleep(0.2)
        return found


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("hub-e2e")
    data_dir = root / "store-data"
    store_port, registry_port = free_port(), free_port()
    store_url = f"http://127.0.0.1:{store_port}"
    registry = f"127.0.0.1:{registry_port}"
    store_env = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_SECRET_KEY": "e2e-hub-secret-key-0123456789abcdef",
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
        alice = make_account(session, "alice")
        make_account(session, "bob")
        make_org(session, alice, "acme")
        secrets = {
            scope: accounts.create_token(
                session, kind="personal", name=scope, scopes=scopes, created_by=alice
            ).secret
            for scope, scopes in (("push", ["pull", "push"]), ("pull", ["pull"]), ("api", ["api"]))
        }
    layout = root / "layout"
    build_oci_layout(layout, tag="1.0", files={"hello.txt": CONTENT})
    try:
        with running_stack(root, store_env, store_port=store_port, registry=registry) as (
            store,
            reg,
        ):
            home = root / "home"
            home.mkdir()
            yield Env(
                root,
                store_url,
                registry,
                engine,
                factory,
                Skopeo(registry, home),
                layout,
                secrets,
                store,
                reg,
            )
    finally:
        engine.dispose()


def _ok(result, env: Env) -> None:
    assert result.returncode == 0, f"{result.stderr}\n{env.diagnostics()}"


def _denied(result) -> None:
    assert result.returncode != 0
    assert "denied" in result.stderr or "unauthorized" in result.stderr, result.stderr


def test_login_then_push_to_the_own_namespace(env: Env) -> None:
    authfile = env.root / "alice-auth.json"
    login = env.skopeo.run(
        "login", "--tls-verify=false", "-u", "alice", "-p", PASSWORD, env.registry,
        authfile=authfile,
    )  # fmt: skip
    _ok(login, env)
    pushed = env.skopeo.run(
        "copy", "--dest-tls-verify=false", f"oci:{env.layout}:1.0",
        f"docker://{env.registry}/alice/app:1.0", authfile=authfile,
    )  # fmt: skip
    _ok(pushed, env)
    assert env.wait_tags("alice/app", {"1.0"}) >= {"1.0"}, env.diagnostics()
    repo = env.hub("alice/app")
    assert repo is not None and (repo.visibility, repo.private) == ("private", True)
    with env.factory() as session:
        tag = session.scalar(
            select(HubTag).where(HubTag.repository_id == repo.id, HubTag.name == "1.0")
        )
        assert tag is not None and tag.pushed_by == "alice"


def test_personal_token_with_push_scope_pushes(env: Env) -> None:
    _ok(env.skopeo.push(env.layout, "1.0", "alice/tools", f"alice:{env.tokens['push']}"), env)
    assert env.wait_tags("alice/tools", {"1.0"}) >= {"1.0"}, env.diagnostics()


def test_a_token_without_push_scope_does_not_push(env: Env) -> None:
    _denied(env.skopeo.push(env.layout, "1.0", "alice/other", f"alice:{env.tokens['pull']}"))
    assert env.hub("alice/other") is None
    # ...but it pulls what its user may pull.
    result, dest = env.pull("alice/app", "1.0", creds=f"alice:{env.tokens['pull']}")
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT


def test_nobody_else_pushes_or_pulls_a_private_repository(env: Env) -> None:
    _denied(env.skopeo.push(env.layout, "1.0", "alice/app", f"bob:{PASSWORD}"))
    _denied(env.skopeo.push(env.layout, "1.0", "alice/intruder", f"bob:{PASSWORD}"))
    assert env.hub("alice/intruder") is None
    result, _ = env.pull("alice/app", "1.0", creds=f"bob:{PASSWORD}")
    _denied(result)
    result, _ = env.pull("alice/app", "1.0")
    _denied(result)
    # bob's own namespace is his.
    _ok(env.skopeo.push(env.layout, "1.0", "bob/app", f"bob:{PASSWORD}"), env)


def _api(env: Env, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {env.tokens['api']}"}
    return httpx.request(
        method, f"{env.store_url}/api/v1{path}", headers=headers, timeout=60, **kwargs
    )  # type: ignore[arg-type]


def test_tags_show_platform_and_size_read_from_the_registry(env: Env) -> None:
    before = env.hub("alice/app")
    assert before is not None
    tags = _api(env, "GET", "/repositories/alice/app/tags")
    assert tags.status_code == 200, tags.text
    (tag,) = tags.json()
    assert tag["name"] == "1.0" and tag["pushed_by"] == "alice"
    (platform,) = tag["platforms"]
    assert (platform["os"], platform["architecture"]) == ("linux", "amd64")
    assert platform["digest"] == tag["digest"] and tag["size"] == platform["size"] > 0
    page = httpx.get(f"{env.store_url}/v2/repositories/alice/app/tags")
    assert page.status_code == 404  # private: as if it did not exist
    # The store's own reads are not downloads.
    time.sleep(1.0)
    after = env.hub("alice/app")
    assert after is not None and after.pull_count == before.pull_count


def test_transfer_to_an_organisation_moves_the_tags(env: Env) -> None:
    moved = _api(env, "POST", "/repositories/alice/tools/transfer", json={"organization": "acme"})
    assert moved.status_code == 200, f"{moved.text}\n{env.diagnostics()}"
    assert moved.json()["repository"] == "acme/tools"
    result, dest = env.pull("acme/tools", "1.0", creds=f"alice:{PASSWORD}")
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT
    result, _ = env.pull("alice/tools", "1.0", creds=f"alice:{PASSWORD}")
    assert result.returncode != 0
    assert env.hub("alice/tools") is None
    assert env.wait_tags("acme/tools", {"1.0"}) >= {"1.0"}
    taken = _api(env, "POST", "/repositories/alice/app/transfer", json={"organization": "acme"})
    assert taken.status_code == 200  # alice/app -> acme/app
    again = _api(env, "POST", "/repositories/bob/app/transfer", json={"organization": "acme"})
    assert again.status_code == 404  # bob's private repository: not alice's to see


def test_delete_removes_the_tags_from_the_registry(env: Env) -> None:
    gone = _api(env, "DELETE", "/repositories/acme/tools")
    assert gone.status_code == 200, f"{gone.text}\n{env.diagnostics()}"
    assert gone.json() == {"repository": "acme/tools", "manifests_deleted": 1}
    result, _ = env.pull("acme/tools", "1.0", creds=f"alice:{PASSWORD}")
    assert result.returncode != 0 and "manifest unknown" in result.stderr, result.stderr
    assert env.hub("acme/tools") is None
    assert _api(env, "GET", "/repositories/acme/tools").status_code == 404
