"""End to end: the production image, built from the Dockerfile on a Debian bookworm base with
buildah and started with ``buildah run`` (no container engine; tests/e2e/image_build.py).

One scenario in steps sharing one build: the image migrates a scratch PostgreSQL database
(``store db upgrade``), serves with the settings docker-compose.yml gives it (production,
plain http allowed) on 127.0.0.1 and a free port, writes the registry's configuration,
which Debian's docker-registry then runs with, and skopeo pushes and pulls through the
containerised store's token auth; last the store stops on SIGTERM as under an engine.
Minutes of work: marked ``image`` (skip with ``-m "not image"``); CI runs it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from store.accounts import service as accounts
from store.db import make_engine, make_sessionmaker, session_scope
from store.registry.models import HubRepository
from tests import deploy_files, pg
from tests.e2e import image_build
from tests.e2e.image_build import BuiltImage, cmdline, descendants, parent
from tests.e2e.registry_env import (
    MISSING as REGISTRY_MISSING,
)
from tests.e2e.registry_env import (
    Process,
    Skopeo,
    build_oci_layout,
    clean_env,
    free_port,
    read_oci_file,
    start,
    wait_http,
)
from tests.factories import make_account, make_org, make_product

MISSING = image_build.MISSING + REGISTRY_MISSING
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.image,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} installed"),
    pytest.mark.skipif(not pg.PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)"),
]

STORE_UID = 10001
CONTENT = b"pulled through the containerised store\n"


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    if os.geteuid() != 0:
        pytest.fail("the image test runs buildah as root; skip it with -m 'not image'")
    with image_build.built_image() as built:
        yield built


@dataclass
class Stack:
    image: BuiltImage
    container: str
    root: Path
    env: dict[str, str]  # what the store's container runs with
    store_url: str
    registry: str  # host:port
    database_url: str
    metrics_token: str
    before_upgrade: subprocess.CompletedProcess[str]
    upgrade: subprocess.CompletedProcess[str]

    def run(self, *argv: str, volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return self.image.buildah.run(self.container, argv, env=self.env, volumes=volumes)


@pytest.fixture(scope="module")
def stack(image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A container of the image and the settings compose gives the store, pointed at a
    scratch database and loopback ports; the schema upgraded from the image."""
    root = tmp_path_factory.mktemp("image-e2e")
    store_port, registry_port = free_port(), free_port()
    store_url = f"http://127.0.0.1:{store_port}"
    registry = f"127.0.0.1:{registry_port}"
    metrics_token = secrets.token_urlsafe(24)
    # The example .env with its blanks (the secrets) filled in, as an operator does.
    variables = deploy_files.example_variables(
        STORE_PUBLIC_URL=store_url,
        STORE_REGISTRY_URL=f"http://{registry}",
        STORE_METRICS_TOKEN=metrics_token,
    )
    with pg.scratch_database("image") as database_url:
        env = deploy_files.compose_environment("store", variables)
        # Compose's network names (postgres, store) are this host's loopback here.
        env |= {
            "STORE_DATABASE_URL": database_url,
            "STORE_REGISTRY_NOTIFY_URL": store_url,
            "STORE_HOST": "127.0.0.1",
            "STORE_PORT": str(store_port),
        }
        buildah = image.buildah
        container = buildah("from", "--pull=never", image.name)
        try:
            serve = image.config["Cmd"]
            before = buildah.run(container, serve, env=env, timeout=60)
            upgrade = buildah.run(container, ["store", "db", "upgrade"], env=env, timeout=300)
            yield Stack(
                image, container, root, env, store_url, registry, database_url,
                metrics_token, before, upgrade,
            )  # fmt: skip
        finally:
            subprocess.run(buildah.argv("rm", container), env=buildah.env, capture_output=True)


@dataclass
class Server:
    buildah_process: subprocess.Popen[bytes]
    pid: int  # the store's own process inside the container
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _store_process(buildah_pid: int, timeout: float = 60) -> int:
    """The process the image's CMD became: `sh -c "exec store serve …"` is replaced by the
    store itself (what an engine's SIGTERM reaches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(buildah_pid):
            argv = cmdline(pid)
            if len(argv) >= 3 and argv[1].endswith("/bin/store") and argv[2] == "serve":
                return pid
        time.sleep(0.2)
    raise TimeoutError("no store serve process under buildah run")


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[Server]:
    """The image's CMD, started in the container on the upgraded database."""
    assert stack.upgrade.returncode == 0, stack.upgrade.stderr
    log_path = stack.root / "store.log"
    with open(log_path, "wb") as log:
        process = stack.image.buildah.start(
            stack.container, stack.image.config["Cmd"], env=stack.env, log=log
        )
    try:
        pid = _store_process(process.pid)
        running = Server(process, pid, log_path)
        wait_http(f"{stack.store_url}/healthz", timeout=120, proc=process)
        yield running
    finally:
        if process.poll() is None:
            for pid in reversed(descendants(process.pid)):
                if cmdline(pid)[1:3] == [
                    "/opt/venv/bin/store",
                    "serve",
                ]:
                    os.kill(pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_the_image_runs_as_the_store_user_with_the_locked_versions(
    image: BuiltImage, stack: Stack, record_property: pytest.RecordProperty
) -> None:
    config = image.config
    assert config["User"] == "store"
    assert config["WorkingDir"] == "/var/lib/store"
    assert config["Cmd"] == deploy_files.image_cmd()
    # --format docker keeps the health check (the OCI format has none).
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "python", "-c"]
    who = stack.run("id", "-u")
    assert who.returncode == 0 and who.stdout.strip() == str(STORE_UID), who.stderr
    # The versions installed are the lock's, for every package of the image's virtualenv.
    listed = stack.run(
        "python",
        "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
    )
    assert listed.returncode == 0, listed.stderr
    installed = {_normal(k): v for k, v in json.loads(listed.stdout).items()}
    locked = {
        _normal(name): version
        for name, version in re.findall(
            r"^([A-Za-z0-9_.-]+)==([^\s;]+)",
            (deploy_files.ROOT / "constraints.txt").read_text(),
            re.M,
        )
    }
    assert installed.pop("store") == "0.1.0"
    assert installed, listed.stdout
    for name, version in installed.items():
        assert locked.get(name) == version, f"{name} {version} is not the locked {locked.get(name)}"
    # Only the runtime: no test tools, and pip and setuptools went with the build stage.
    assert not {"pytest", "pip", "setuptools", "mypy"} & set(installed)
    # No sources, wheels or pip of the build stage (the base's own python3-venv keeps
    # Debian's pip wheel under /usr/share).
    leftovers = stack.run(
        "sh", "-c", "ls -d /src /opt/venv/bin/pip 2>/dev/null; find /opt /var /tmp -name '*.whl'"
    )
    assert leftovers.stdout.strip() == ""
    # The virtualenv is the root's, nothing in it writable by the store user.
    owned = stack.run(
        "find",
        "/opt/venv",
        "!",
        "-type",
        "l",
        "(",
        "!",
        "-user",
        "root",
        "-o",
        "-perm",
        "/022",
        ")",
    )
    assert owned.returncode == 0 and owned.stdout == "", owned.stdout[:2000] + owned.stderr
    record_property("image_size_mb", image.size_mb)
    record_property("base_size_mb", image.base_size_mb)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_store_waits_for_the_upgrade_which_runs_from_the_image(stack: Stack) -> None:
    # Started before `store db upgrade` (what compose's depends_on prevents), it refuses.
    before = stack.before_upgrade
    assert before.returncode == 1, before.stdout + before.stderr
    assert "run `store db upgrade` before `store serve`" in before.stderr
    assert stack.upgrade.returncode == 0, stack.upgrade.stderr
    assert "Upgraded" in stack.upgrade.stdout, stack.upgrade.stdout
    check = stack.run("store", "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_containerised_store_serves(stack: Stack, server: Server) -> None:
    with httpx.Client(base_url=stack.store_url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        home = client.get("/")
        assert home.status_code == 200, server.log()
        assert home.headers["content-type"].startswith("text/html")
        stylesheet = re.search(
            r'<link rel="stylesheet" href="(/static/store\.css[^"]*)"', home.text
        )
        assert stylesheet, home.text[:2000]
        css = client.get(stylesheet[1])
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        products = client.get("/api/v1/products")
        assert products.status_code == 200, products.text
        assert products.headers["content-type"].startswith("application/json")
        assert isinstance(products.json()["items"], list)
        assert client.get("/metrics").status_code in (401, 403)
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {stack.metrics_token}"})
        assert metrics.status_code == 200 and "store_" in metrics.text
    # The image's health check, run as an engine runs it, inside the container.
    probe = stack.run(*stack.image.config["Healthcheck"]["Test"][1:])
    assert probe.returncode == 0, probe.stderr
    # Production: JSON logs, and where it listens.
    announced = [
        json.loads(line) for line in server.log().splitlines() if "Store listening on" in line
    ]
    assert announced and announced[0]["public_url"] == stack.store_url
    # The shell of the CMD exec'd the store: no sh between the runtime and the store.
    runtime = cmdline(parent(server.pid))
    assert runtime[0] == "buildah-chroot-exec", runtime
    assert runtime[-2:] == deploy_files.image_cmd()[1:]


def _seed(database_url: str) -> tuple[str, str]:
    """A publisher with a free product and a robot that pushes; a customer with a personal
    token. Returns (robot secret, customer token)."""
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            alice = make_account(session, "alice")
            acme = make_org(session, alice, "acme")
            bob = make_account(session, "bob")
            make_product(
                session, acme, alice, "freebie", tiers=[{"slug": "free", "billing": "free"}]
            )
            robot = accounts.create_token(
                session,
                kind="robot",
                name="ci",
                scopes=["pull", "push"],
                created_by=alice,
                org=acme,
            ).secret
            personal = accounts.create_token(
                session, kind="personal", name="api", scopes=["api", "pull"], created_by=bob
            ).secret
        return robot, personal
    finally:
        engine.dispose()


def test_pull_through_the_containerised_token_auth(stack: Stack, server: Server) -> None:
    # `store registry config` from the image writes into a directory both see at one path
    # (config.yml names bundle.pem by its absolute path, as in compose's shared volume).
    out = stack.root / "registry"
    out.mkdir()
    os.chown(out, STORE_UID, -1)
    written = stack.run(
        "store", "registry", "config", "--out", str(out), "--storage-dir", str(out / "blobs"),
        "--addr", stack.registry, "--json",
        volumes=(f"{out}:{out}",),
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    config = (out / "config.yml").read_text()
    assert f"realm: {stack.store_url}/token" in config
    assert f"{stack.store_url}/registry/events" in config
    logs = stack.root / "logs"
    logs.mkdir()
    registry = start(
        "registry",
        ["docker-registry", "serve", str(out / "config.yml")],
        env=clean_env({}),
        cwd=out,
        logs=logs,
    )
    try:
        wait_http(f"http://{stack.registry}/v2/", proc=registry.proc)
        _pull_and_push(stack, server, registry)
    finally:
        registry.stop()


def _pull_and_push(stack: Stack, server: Server, registry: Process) -> None:
    def diagnostics() -> str:
        return f"--- store\n{server.log()[-3000:]}\n--- registry\n{registry.log()[-3000:]}"

    robot, personal = _seed(stack.database_url)
    home = stack.root / "home"
    home.mkdir()
    skopeo = Skopeo(stack.registry, home)
    layout = stack.root / "layout"
    build_oci_layout(layout, tag="v1", files={"hello.txt": CONTENT})

    pushed = skopeo.push(layout, "v1", "acme/freebie", f"ci:{robot}")
    assert pushed.returncode == 0, pushed.stderr + diagnostics()
    # A wrong password is refused by the containerised token endpoint.
    refused = skopeo.pull("acme/freebie", "v1", stack.root / "refused", creds="bob:wrong")
    assert refused.returncode != 0
    assert "invalid username/password" in refused.stderr, refused.stderr
    # The customer gets the free tier through the API, then pulls with the same token.
    got = httpx.post(
        f"{stack.store_url}/api/v1/products/acme/freebie/tiers/free/get",
        headers={"Authorization": f"Bearer {personal}"},
        timeout=10,
    )
    assert got.status_code == 201, got.text
    dest = stack.root / "pulled"
    pulled = skopeo.pull("acme/freebie", "v1", dest, creds=f"bob:{personal}")
    assert pulled.returncode == 0, pulled.stderr + diagnostics()
    assert read_oci_file(dest, "hello.txt") == CONTENT
    # The registry's notifications reached the containerised store.
    engine = make_engine(stack.database_url)
    try:
        factory = make_sessionmaker(engine)
        deadline = time.monotonic() + 30
        hub = None
        while time.monotonic() < deadline:
            with factory() as session:
                hub = session.scalar(
                    select(HubRepository).where(HubRepository.name == "acme/freebie")
                )
                if hub is not None and hub.pull_count >= 1:
                    break
            time.sleep(0.2)
        assert hub is not None and hub.last_pushed_at is not None, diagnostics()
        assert hub.pull_count >= 1, diagnostics()
    finally:
        engine.dispose()


def test_a_clean_stop(stack: Stack, server: Server) -> None:
    # What an engine's stop does: SIGTERM to the container's main process.
    os.kill(server.pid, signal.SIGTERM)
    assert server.buildah_process.wait(timeout=60) == 0, server.log()
    log = server.log()
    assert log.count("Application shutdown complete") >= 2, log[-3000:]  # every worker
    assert "Traceback" not in log
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.store_url}/healthz", timeout=2)
    probe = stack.run(*stack.image.config["Healthcheck"]["Test"][1:])
    assert probe.returncode != 0
