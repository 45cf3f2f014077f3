"""End to end: a publisher pushes to the real registry, signs the pushed digest with
`store sign`, and the store shows the tag signed; an unsigned push to the certified product
is flagged. Processes (store under uvicorn, docker-registry) run on free 127.0.0.1 ports and
are stopped by PID."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.accounts import service as accounts
from store.catalog import service as catalog
from store.db import make_engine, make_sessionmaker, session_scope
from store.registry.models import HubRepository, HubTag
from store.signing import certification, publisher_keys
from store.signing import service as signing
from tests.e2e.registry_env import (
    MISSING,
    Process,
    Skopeo,
    build_oci_layout,
    clean_env,
    free_port,
    python_cli,
    running_stack,
)
from tests.factories import make_account, make_admin, make_org, make_product

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} installed"),
]


@dataclass
class Env:
    root: Path
    store_url: str
    registry: str
    factory: sessionmaker[Session]
    skopeo: Skopeo
    robot: str
    alice_token: str
    key_file: Path
    processes: list[Process]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("signing-e2e")
    data_dir = root / "store-data"
    data_dir.mkdir()
    store_port, registry_port = free_port(), free_port()
    store_url, registry = f"http://127.0.0.1:{store_port}", f"127.0.0.1:{registry_port}"
    store_env = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_SECRET_KEY": "e2e-signing-secret-0123456789abcdef",
            "STORE_PUBLIC_URL": store_url,
            "STORE_REGISTRY_URL": f"http://{registry}",
            "STORE_ENVIRONMENT": "test",
        }
    )
    engine = make_engine(f"sqlite:///{data_dir / 'store.db'}")
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    key_file = root / "signing.pem"
    made = python_cli("signing", "keygen", "--out", str(key_file), "--json", env=clean_env({}))
    assert made.returncode == 0, made.stderr
    with session_scope(factory) as session:
        alice = make_account(session, "alice")
        acme = make_org(session, alice, "acme")
        make_product(session, acme, alice, "signed")
        publisher_keys.add_key(
            session,
            org=acme,
            actor=alice,
            public_pem=Path(f"{key_file}.pub").read_text(),
            label="ci",
        )
        robot = accounts.create_token(
            session, kind="robot", name="ci", scopes=["pull", "push"], created_by=alice, org=acme
        ).secret
        alice_token = accounts.create_token(
            session, kind="personal", name="api", scopes=["api"], created_by=alice
        ).secret
        make_admin(session)
    try:
        stack = running_stack(root, store_env, store_port=store_port, registry=registry)
        with stack as processes:
            home = root / "home"
            home.mkdir()
            yield Env(
                root,
                store_url,
                registry,
                factory,
                Skopeo(registry, home),
                robot,
                alice_token,
                key_file,
                processes,
            )
    finally:
        engine.dispose()


def _push(env: Env, tag: str, content: bytes) -> str:
    layout = env.root / f"layout-{tag}"
    build_oci_layout(layout, tag=tag, files={"hello.txt": content})
    result = env.skopeo.push(layout, tag, "acme/signed", f"ci:{env.robot}")
    assert result.returncode == 0, f"{result.stderr}\n{env.diagnostics()}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with env.factory() as session:
            digest = session.scalar(
                select(HubTag.digest)
                .join(HubRepository, HubRepository.id == HubTag.repository_id)
                .where(HubRepository.name == "acme/signed", HubTag.name == tag)
            )
        if digest:
            return digest
        time.sleep(0.2)
    raise AssertionError(f"the push of {tag} never reached the hub\n{env.diagnostics()}")


def _tags(env: Env) -> dict[str, dict[str, object]]:
    response = httpx.get(f"{env.store_url}/api/v1/products/acme/signed/tags")
    assert response.status_code == 200, response.text
    return {t["tag"]: t for t in response.json()}


def _sign(env: Env, tag: str, digest: str, token: str) -> object:
    return python_cli(
        "sign",
        "--key",
        str(env.key_file),
        "--repository",
        "acme/signed",
        "--digest",
        digest,
        "--tag",
        tag,
        "--registry-host",
        env.registry,
        "--store-url",
        env.store_url,
        env={**clean_env({}), "STORE_SIGN_TOKEN": token},
    )


def test_sign_certify_and_flag_an_unsigned_push(env: Env) -> None:
    """One scenario (tests may run on different workers, each with its own env)."""
    digest = _push(env, "v1", b"signed content v1\n")
    assert _tags(env)["v1"]["status"] == "unsigned"
    result = _sign(env, "v1", digest, env.robot)
    assert result.returncode == 0, f"{result.stderr}\n{env.diagnostics()}"  # type: ignore[attr-defined]
    v1 = _tags(env)["v1"]
    assert (v1["digest"], v1["status"], v1["signers"]) == (digest, "signed", ["ci"])
    page = httpx.get(f"{env.store_url}/products/acme/signed")
    assert page.status_code == 200 and "Signed" in page.text
    with session_scope(env.factory) as session:
        product = catalog.get_product_by_repository(session, "acme/signed")
        alice = accounts.get_account_by_username(session, "alice")
        request = certification.submit(session, actor=alice, product=product, tag="v1")
        admin = accounts.get_account_by_username(session, "root-admin")
        certification.approve(session, actor=admin, request=request, settings=None)
    assert _tags(env)["v1"]["status"] == "certified"
    digest = _push(env, "v2", b"unsigned content v2\n")
    v2 = _tags(env)["v2"]
    assert (v2["status"], v2["flagged"]) == ("unsigned", True)
    response = httpx.get(
        f"{env.store_url}/api/v1/orgs/acme/push-flags",
        headers={"Authorization": f"Bearer {env.alice_token}"},
    )
    assert [(f["tag"], f["digest"]) for f in response.json()] == [("v2", digest)]
    with env.factory() as session:
        product = catalog.get_product_by_repository(session, "acme/signed")
        assert [f.tag for f in signing.list_flags(session, product=product)] == ["v2"]


def test_cli_reports_the_stores_refusal(env: Env) -> None:
    result = _sign(env, "v1", "sha256:" + "0" * 64, "stp_not_a_real_token")
    assert result.returncode == 1  # type: ignore[attr-defined]
    assert "refused the signature (bad_token)" in result.stderr  # type: ignore[attr-defined]
