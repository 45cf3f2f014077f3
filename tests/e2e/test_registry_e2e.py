"""End to end: the store is the token server of Debian's docker-registry, driven by skopeo.

One scenario in steps sharing one environment (store under uvicorn + registry, on free
127.0.0.1 ports, stopped by PID). Nothing outside 127.0.0.1 is contacted.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.accounts import service as accounts
from store.billing.models import Order
from store.db import make_engine, make_sessionmaker, session_scope
from store.licensing import entitlements
from store.licensing.models import Entitlement
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
    running_stack,
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

    try:
        stack = running_stack(root, store_env, store_port=store_port, registry=registry)
        with stack as (store, reg):
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
        assert tools is not None and tools.private is True  # no product, not marked public


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


def _anonymous_search(env: Env, term: str) -> tuple[set[str], set[str]]:
    """Names found by anonymous /api/v1/search and /v1/search (docker search)."""
    api = httpx.get(f"{env.store_url}/api/v1/search", params={"q": term, "per_page": 50})
    docker = httpx.get(f"{env.store_url}/v1/search", params={"q": term, "n": 100})
    assert api.status_code == 200 and docker.status_code == 200, (api.text, docker.text)
    return (
        {h["name"] for h in api.json()["results"]},
        {r["name"] for r in docker.json()["results"]},
    )


def test_private_unless_published(env: Env) -> None:
    """An unlisted repository, a deleted draft's images and a paid product's sub-repository
    are refused anonymously, exactly like a repository that does not exist, and hidden from
    search; a repository its owner marks public pulls anonymously and is found."""
    with session_scope(env.factory) as session:
        alice = accounts.get_account_by_username(session, "alice")
        acme = accounts.get_organization(session, "acme")
        make_product(session, acme, alice, "gone", tiers=[paid_tier()], publish=False)
    for repo in ("acme/gone", "acme/app/worker"):
        _ok(env.skopeo.push(env.layout, "v1", repo, f"ci:{env.robot}"), env)
    with session_scope(env.factory) as session:
        from store.catalog import service as catalog

        alice = accounts.get_account_by_username(session, "alice")
        draft = catalog.get_product_by_repository(session, "acme/gone")
        catalog.delete_product(session, actor=alice, product=draft)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        _hub(env, "acme/gone") and _hub(env, "acme/app/worker")
    ):
        time.sleep(0.2)

    unknown, _ = env.pull("acme/never-pushed")
    assert unknown.returncode != 0 and "No access to acme/never-pushed." in unknown.stderr
    # Each is refused, with the answer a name never pushed gets (for a sub-repository of a
    # listed product: the product's, whatever the name under it).
    for repo, never_pushed in (
        ("acme/tools", "acme/never-pushed"),
        ("acme/gone", "acme/never-pushed"),
        ("acme/app/worker", "acme/app/never-pushed"),
    ):
        result, _ = env.pull(repo)
        assert result.returncode != 0, f"{repo} pulled anonymously"
        if repo == "acme/app/worker":
            assert "denied: Log in to pull acme/app; get access at" in result.stderr
        else:
            assert f"denied: No access to {repo}." in result.stderr, result.stderr
            assert "products/" not in result.stderr  # nothing named
        anon = httpx.get(
            f"{env.store_url}/token",
            params={"service": "store-registry", "scope": f"repository:{repo}:pull"},
        )
        never = httpx.get(
            f"{env.store_url}/token",
            params={"service": "store-registry", "scope": f"repository:{never_pushed}:pull"},
        )
        assert anon.status_code == never.status_code == 401
        detail, other = (
            anon.json()["errors"][0]["detail"][0],
            never.json()["errors"][0]["detail"][0],
        )
        assert {**detail, "repository": "", "message": ""} == {
            **other,
            "repository": "",
            "message": "",
        }
        check = httpx.get(f"{env.store_url}/api/v1/registry/access", params={"repository": repo})
        assert check.status_code == 200 and check.json()["granted"] == []
        refused = check.json()["refused"][0]
        assert refused["reason"] == ("login_required" if repo == "acme/app/worker" else "no_access")
        assert {**refused, "repository": "", "message": ""} == {
            **detail,
            "repository": "",
            "message": "",
        }
    for term in ("tools", "gone", "worker", "acme"):
        api, docker = _anonymous_search(env, term)
        assert not {"acme/tools", "acme/gone", "acme/app/worker"} & (api | docker), term

    # The paid product: anonymous users are told to log in; the owner's members pull all of it.
    result, _ = env.pull("acme/app")
    assert result.returncode != 0
    assert "Log in to pull acme/app" in result.stderr, result.stderr
    _ok(env.pull("acme/app/worker", creds=f"alice:{PASSWORD}")[0], env)

    # The namespace's owner marks acme/tools public: anyone pulls it and finds it.
    with session_scope(env.factory) as session:
        alice = accounts.get_account_by_username(session, "alice")
        token = accounts.create_token(
            session, kind="personal", name="api", scopes=["api"], created_by=alice
        ).secret
    response = httpx.put(
        f"{env.store_url}/api/v1/repositories/acme/tools/visibility",
        json={"visibility": "public"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["public"] is True
    result, dest = env.pull("acme/tools")
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT
    api, docker = _anonymous_search(env, "tools")
    assert "acme/tools" in api and "acme/tools" in docker


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


def _personal_token(env: Env, username: str, scopes: list[str]) -> str:
    with session_scope(env.factory) as session:
        owner = accounts.get_account_by_username(session, username)
        return accounts.create_token(
            session, kind="personal", name="-".join(scopes), scopes=scopes, created_by=owner
        ).secret


def _registry_login(env: Env, username: str, password: str, name: str) -> tuple[Path, str | None]:
    """What `docker login` does: ask /token for offline access; an auth file holding the
    refresh token as the identity token (skopeo then uses the OAuth2 refresh grant)."""
    response = httpx.get(
        f"{env.store_url}/token",
        params={"service": "store-registry", "offline_token": "true", "client_id": "e2e"},
        auth=(username, password),
    )
    assert response.status_code == 200, response.text
    refresh = response.json().get("refresh_token")
    authfile = env.root / f"auth-{name}.json"
    entry = {"auth": base64.b64encode(f"{username}:".encode()).decode()}
    authfile.write_text(json.dumps({"auths": {env.registry: {**entry, "identitytoken": refresh}}}))
    return authfile, refresh


def _push_with(env: Env, repo: str, authfile: Path):
    return env.skopeo.run(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{env.layout}:v1",
        f"docker://{env.registry}/{repo}:v2",
        authfile=authfile,
    )


def test_api_only_token_and_its_refresh_flow_can_neither_pull_nor_push(env: Env) -> None:
    # alice owns acme: her password pushes there. A token she made for the API must not.
    api_token = _personal_token(env, "alice", ["api"])
    result = env.skopeo.push(env.layout, "v1", "acme/app", f"alice:{api_token}")
    assert result.returncode != 0, result.stdout
    result, _ = env.pull("acme/app", creds=f"alice:{api_token}")
    assert result.returncode != 0
    authfile, refresh = _registry_login(env, "alice", api_token, "api-only")
    assert refresh is None  # no registry scope: no refresh token to keep
    # A pull-only token's refresh flow pulls, and still never pushes.
    pull_token = _personal_token(env, "alice", ["pull"])
    authfile, refresh = _registry_login(env, "alice", pull_token, "pull-only")
    assert refresh is not None
    result = _push_with(env, "acme/app", authfile)
    assert result.returncode != 0, result.stdout
    assert "denied" in result.stderr or "unauthorized" in result.stderr, result.stderr
    response = httpx.post(
        f"{env.store_url}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": "store-registry",
            "scope": "repository:acme/app:pull,push",
        },
    )
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "acme/app", "actions": ["pull"]}]


def test_revoking_the_source_kills_its_refresh_token_at_the_next_token_request(
    env: Env,
) -> None:
    token = _personal_token(env, "alice", ["pull", "push"])
    authfile, refresh = _registry_login(env, "alice", token, "revoked-source")
    assert refresh is not None
    result, dest = env.pull("acme/app", authfile=authfile)
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT
    with session_scope(env.factory) as session:
        alice = accounts.get_account_by_username(session, "alice")
        source = next(
            t for t in accounts.list_tokens(session, account=alice) if t.prefix == token[:12]
        )
        accounts.revoke_token(session, token=source, actor=alice)
    result, _ = env.pull("acme/app", authfile=authfile)
    assert result.returncode != 0
    assert "revoked" in result.stderr, result.stderr
    result = _push_with(env, "acme/app", authfile)
    assert result.returncode != 0


def test_pull_counts_match_the_pulls_made(env: Env) -> None:
    # bob once (granted), alice twice (refresh tokens)
    assert env.pulls.get("acme/app") == 3
    for name, expected in env.pulls.items():
        assert _wait_pull_count(env, name, expected) == expected, env.diagnostics()
    time.sleep(1.5)  # retries or late duplicates would show up as over-counting
    for name, expected in env.pulls.items():
        repo = _hub(env, name)
        assert repo is not None and repo.pull_count == expected, (name, repo and repo.pull_count)


def _two_platform_layout(root: Path, tag: str) -> str:
    """An OCI layout whose ``tag`` is an image index of a linux/amd64 and a linux/arm64/v8
    image (and an attestation-like entry with os "unknown"); the index digest."""
    build_oci_layout(root, tag=tag, files={"hello.txt": CONTENT})
    [amd64] = json.loads((root / "index.json").read_text())["manifests"]
    amd64_manifest = json.loads(
        (root / "blobs" / "sha256" / amd64["digest"].removeprefix("sha256:")).read_bytes()
    )
    arm_config = {"architecture": "arm64", "variant": "v8", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip

    def blob(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    config_digest, config_size = blob(json.dumps(arm_config).encode())
    arm_manifest = {**amd64_manifest, "config": {**amd64_manifest["config"],
                    "digest": config_digest, "size": config_size}}  # fmt: skip
    arm_digest, arm_size = blob(json.dumps(arm_manifest).encode())
    oci = "application/vnd.oci.image.manifest.v1+json"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": oci, "digest": amd64["digest"], "size": amd64["size"],
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": oci, "digest": arm_digest, "size": arm_size,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }  # fmt: skip
    index_digest, index_size = blob(json.dumps(index).encode())
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
         "size": index_size, "annotations": {"org.opencontainers.image.ref.name": tag}},
    ]}))  # fmt: skip
    return index_digest


def test_sync_reconciles_from_catalog_and_reads_tag_platforms(env: Env) -> None:
    layout = env.root / "two-platforms"
    index_digest = _two_platform_layout(layout, "multi")
    pushed = env.skopeo.run(
        "copy", "--all", "--dest-tls-verify=false", "--dest-creds", f"alice:{PASSWORD}",
        f"oci:{layout}:multi", f"docker://{env.registry}/acme/tools:multi",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    deadline = time.monotonic() + 20  # the registry's notification reaches the hub
    while time.monotonic() < deadline:
        with env.factory() as session:
            if session.scalar(
                select(HubTag.id)
                .join(HubRepository)
                .where(HubRepository.name == "acme/tools", HubTag.name == "multi")
            ):
                break
        time.sleep(0.2)
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
    # acme/app, acme/freebie, acme/tools, and acme/gone, acme/app/worker (earlier step)
    assert report["repositories"] == 5 and report["tags_added"] == 2
    assert report["platforms_filled"] >= 2 and report["platforms_unreadable"] == 0
    with env.factory() as session:
        tools = session.scalar(select(HubRepository).where(HubRepository.name == "acme/tools"))
        assert tools is not None
        tags = {t.name: t for t in tools.tags}
        assert sorted(tags) == ["multi", "v1"]
        [single] = tags["v1"].platforms or []
        assert (single["os"], single["architecture"], single["variant"]) == ("linux", "amd64", "")
        assert single["digest"] == tags["v1"].digest and single["size"] > 0
        assert tags["multi"].digest == index_digest
        assert [
            (p["os"], p["architecture"], p["variant"]) for p in tags["multi"].platforms or []
        ] == [("linux", "amd64", ""), ("linux", "arm64", "v8")]
        assert all(p["size"] > 0 for p in tags["multi"].platforms or [])
    # a second sync has nothing to read again
    again = json.loads(python_cli("registry", "sync", "--json", env=store_env).stdout)
    assert again["tags_added"] == 0 and again["platforms_filled"] == 0


# --- licenses and the store's own checkout (after the pull counts above: these pull too) ---

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _customer(env: Env, username: str) -> str:
    """A new account and an API token (``api`` scope) for it."""
    with session_scope(env.factory) as session:
        account = make_account(session, username)
        return accounts.create_token(
            session, kind="personal", name="api", scopes=["api"], created_by=account
        ).secret


def _license(env: Env, api_token: str, entitlement_id: object) -> dict[str, object]:
    response = httpx.get(
        f"{env.store_url}/api/v1/entitlements/{entitlement_id}/license",
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _product_tier(env: Env, repository: str, slug: str) -> tuple[object, object]:
    from store.catalog import service as catalog

    with env.factory() as session:
        product = catalog.get_product_by_repository(session, repository)
        return product.id, tier_of(product, slug).id


def _entitlements(env: Env, username: str, product_id: object) -> list[Entitlement]:
    with env.factory() as session:
        account = accounts.get_account_by_username(session, username)
        return list(
            session.scalars(
                select(Entitlement).where(
                    Entitlement.account_id == account.id, Entitlement.product_id == product_id
                )
            )
        )


def test_license_key_is_a_registry_credential(env: Env) -> None:
    api_token = _customer(env, "erin")
    with session_scope(env.factory) as session:
        from store.catalog import service as catalog

        alice = accounts.get_account_by_username(session, "alice")
        erin = accounts.get_account_by_username(session, "erin")
        product = catalog.get_product_by_repository(session, "acme/app")
        grant = entitlements.grant(session, actor=alice, tier=tier_of(product, "pro"), account=erin)
        grant_id = grant.id
    document = _license(env, api_token, grant_id)
    creds = f"license:{document['token']}"
    result, dest = env.pull("acme/app", creds=creds)
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT
    # the license id works as the username too
    result, _ = env.pull("acme/app", creds=f"{document['id']}:{document['token']}")
    _ok(result, env)
    # another (non-public) repository of the same publisher: not licensed
    result, _ = env.pull("acme/freebie", creds=creds)
    assert result.returncode != 0
    assert "denied" in result.stderr, result.stderr
    # revoking the entitlement revokes its licenses: refused on the very next pull
    with session_scope(env.factory) as session:
        alice = accounts.get_account_by_username(session, "alice")
        entitlement = entitlements.get_entitlement(session, grant_id)
        entitlements.revoke(session, entitlement=entitlement, actor=alice, reason="chargeback")
    result, _ = env.pull("acme/app", creds=creds)
    assert result.returncode != 0
    assert "The license was revoked" in result.stderr, result.stderr


class Browser:
    """The store's HTML pages as a browser uses them: session cookie, CSRF token per form."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)

    def csrf(self, path: str) -> str:
        page = self.client.get(path)
        assert page.status_code == 200, (path, page.status_code, page.text[:500])
        match = CSRF.search(page.text)
        assert match, f"no CSRF token on {path}"
        return html.unescape(match.group(1))

    def post(self, path: str, form: dict[str, str], *, from_page: str) -> httpx.Response:
        return self.client.post(path, data={**form, "csrf_token": self.csrf(from_page)})

    def login(self, username: str) -> None:
        response = self.post(
            "/login", {"login": username, "password": PASSWORD, "next": ""}, from_page="/login"
        )
        assert response.status_code in (302, 303), response.text[:500]

    def checkout(self, tier_id: object, card: str) -> str:
        """Pay with a test card; returns the order id."""
        page = self.client.get(f"/checkout/{tier_id}")
        assert page.status_code == 200 and "TEST MODE" in page.text, page.text[:500]
        response = self.post(
            f"/checkout/{tier_id}",
            {"card_number": card, "exp": "12/34", "cvc": "123", "org": ""},
            from_page=f"/checkout/{tier_id}",
        )
        assert response.status_code in (302, 303), response.text[:500]
        location = response.headers["location"]
        assert location.startswith("/checkout/orders/"), location
        status = self.client.get(location)
        assert status.status_code == 200, status.text[:500]
        return location.rsplit("/", 1)[1]

    def close(self) -> None:
        self.client.close()


def _order(env: Env, order_id: str) -> Order:
    with env.factory() as session:
        order = session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order


def test_checkout_with_test_card_then_pull(env: Env) -> None:
    """The full customer path on the embedded default: buy through the store's own checkout
    (built-in test gateway), get the license, pull with it."""
    api_token = _customer(env, "dave")
    product_id, tier_id = _product_tier(env, "acme/app", "pro")
    browser = Browser(env.store_url)
    try:
        browser.login("dave")
        order_id = browser.checkout(tier_id, "4242 4242 4242 4242")
    finally:
        browser.close()
    order = _order(env, order_id)
    assert order.status == "paid" and order.receipt_number, order.status
    [entitlement] = _entitlements(env, "dave", product_id)
    assert entitlement.status == "active" and order.entitlement_id == entitlement.id
    document = _license(env, api_token, entitlement.id)
    assert document["claims"]["product"]["repository"] == "acme/app"
    result, dest = env.pull("acme/app", creds=f"license:{document['token']}")
    _ok(result, env)
    assert read_oci_file(dest, "hello.txt") == CONTENT
    result, _ = env.pull("acme/app", creds=f"dave:{PASSWORD}")  # the account works as well
    _ok(result, env)


def test_declined_card_gives_no_entitlement_and_no_pull(env: Env) -> None:
    _customer(env, "frank")
    product_id, tier_id = _product_tier(env, "acme/app", "pro")
    browser = Browser(env.store_url)
    try:
        browser.login("frank")
        order_id = browser.checkout(tier_id, "4000 0000 0000 0002")
    finally:
        browser.close()
    assert _order(env, order_id).status == "failed"
    assert _entitlements(env, "frank", product_id) == []
    result, _ = env.pull("acme/app", creds=f"frank:{PASSWORD}")
    assert result.returncode != 0
    assert "no license for acme/app" in result.stderr, result.stderr
