"""End to end: automated builds with real git, buildah, Debian's docker-registry and skopeo.

A local bare Git repository with a multi-stage Dockerfile (a base made from Debian's static
busybox: no network) receives a commit; a signed push webhook queues a build; a `store
builds worker` process clones the exact commit, builds it with buildah (vfs storage, chroot
isolation) and pushes it with the build's own credential; skopeo sees the recorded digest
and the build page shows the log and the tag. A broken Dockerfile fails with the failing
step in its log and pushes nothing; a forged webhook is refused and builds nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.builds.models import Build
from store.db import make_engine, make_sessionmaker, session_scope
from store.registry.models import HubRepository, HubTag
from tests.e2e.registry_env import MISSING, Skopeo, clean_env, free_port, python_cli, running_stack
from tests.factories import PASSWORD, api_token, make_account, make_org

BUSYBOX = Path("/bin/busybox")
NEEDED = [n for n in ("git", "buildah") if not shutil.which(n)] + MISSING
if not BUSYBOX.exists():
    NEEDED.append("busybox-static")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(bool(NEEDED), reason=f"needs {', '.join(NEEDED)} installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation runs as root"),
]

DOCKERFILE = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM base AS compile
ARG GREETING=hello
RUN echo "$GREETING from an automated build" > /message.txt

FROM scratch
COPY --from=base /bin/busybox /bin/busybox
COPY --from=compile /message.txt /message.txt
CMD ["/bin/busybox", "cat", "/message.txt"]
"""
BROKEN = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo "compiling the broken step" && exit 3
"""


@dataclass
class Env:
    root: Path
    store_url: str
    registry: str
    factory: sessionmaker[Session]
    store_env: dict[str, str]
    token: str
    secret: str
    work: Path
    skopeo: Skopeo
    logs: list[str]

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(self.work), *args],
            capture_output=True, text=True, check=True, timeout=60,
            env=clean_env({"HOME": str(self.root), "GIT_AUTHOR_NAME": "Dev",
                           "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "Dev",
                           "GIT_COMMITTER_EMAIL": "dev@example.com"}),
        )  # fmt: skip
        return result.stdout.strip()

    def commit(self, branch: str, dockerfile: str, message: str) -> str:
        self.git("checkout", "-q", "-B", branch)
        (self.work / "Dockerfile").write_text(dockerfile)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        self.git("push", "-q", "origin", branch)
        return self.git("rev-parse", "HEAD")

    def webhook(self, branch: str, sha: str, *, secret: str | None = None) -> httpx.Response:
        body = json.dumps({"ref": f"refs/heads/{branch}", "after": sha}).encode()
        key = (secret or self.secret).encode()
        return httpx.post(
            f"{self.store_url}/api/v1/repositories/acme/app/builds/webhook",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
            },
            timeout=30,
        )

    def work_off_queue(self) -> None:
        done = python_cli("builds", "worker", "--once", "--json", env=self.store_env)
        self.logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr

    def build(self, build_id: str) -> Build:
        with self.factory() as session:
            build = session.get(Build, uuid.UUID(build_id))
            assert build is not None
            return build

    def builds(self) -> int:
        with self.factory() as session:
            return session.scalar(select(func.count()).select_from(Build)) or 0

    def log(self, build_id: str) -> str:
        answer = httpx.get(
            f"{self.store_url}/api/v1/repositories/acme/app/builds/{build_id}/log",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["text"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("builds-e2e")
    data_dir = root / "store-data"
    data_dir.mkdir()
    # buildah's vfs storage copies every layer: in memory when there is room
    shm = Path("/dev/shm")
    builds_dir = (shm if shm.is_dir() and os.access(shm, os.W_OK) else root) / (
        f"store-builds-e2e-{uuid.uuid4().hex[:8]}"
    )
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
            "STORE_BUILDS_DIR": str(builds_dir),
        }
    )
    engine = make_engine(f"sqlite:///{data_dir / 'store.db'}")
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        alice = make_account(session, "alice")
        make_org(session, alice, "acme")
        token = api_token(session, alice)
    # the Git repository: a bare one the store clones from, and a working copy
    bare, work = root / "app.git", root / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True,
                   capture_output=True)  # fmt: skip
    shutil.copy(BUSYBOX, work / "busybox")
    try:
        with running_stack(root, store_env, store_port=store_port, registry=registry):
            configured = httpx.put(
                f"{store_url}/api/v1/repositories/acme/app/build-source",
                json={
                    "url": str(bare),
                    "rules": [
                        {"ref_kind": "branch", "pattern": "main", "docker_tag": "latest",
                         "build_args": {"GREETING": "hi"}},
                        {"ref_kind": "branch", "pattern": "*", "docker_tag": "{ref}"},
                    ],
                    "timeout_seconds": 600,
                },
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )  # fmt: skip
            assert configured.status_code == 200, configured.text
            home = root / "home"
            home.mkdir()
            yield Env(
                root, store_url, registry, factory, store_env, token,
                configured.json()["webhook_secret"], work, Skopeo(registry, home), [],
            )  # fmt: skip
    finally:
        engine.dispose()
        shutil.rmtree(builds_dir, ignore_errors=True)


def test_push_webhook_builds_and_pushes_the_commit(env: Env) -> None:
    sha = env.commit("main", DOCKERFILE, "multi-stage image")
    queued = env.webhook("main", sha)
    assert queued.status_code == 200, queued.text
    [build_id] = queued.json()["builds"]
    env.work_off_queue()
    build = env.build(build_id)
    log = env.log(build_id)
    assert build.status == "succeeded", f"{build.error}\n{log}\n{env.logs}"
    assert build.commit_sha == sha and build.digest and build.digest.startswith("sha256:")
    assert f"At commit {sha}" in log and "from an automated build" not in build.error
    assert "STEP" in log or "FROM" in log  # buildah's own output is in the log
    inspected = env.skopeo.run(
        "inspect", "--tls-verify=false", "--creds", f"alice:{PASSWORD}",
        f"docker://{env.registry}/acme/app:latest",
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == build.digest
    # the registry's notification reached the hub: the tag, its digest, pushed by the build
    deadline = time.monotonic() + 20
    tag = None
    while time.monotonic() < deadline and tag is None:
        with env.factory() as session:
            tag = session.scalar(
                select(HubTag).join(HubRepository)
                .where(HubRepository.name == "acme/app", HubTag.name == "latest")
            )  # fmt: skip
        time.sleep(0.2)
    assert tag is not None and tag.digest == build.digest
    assert tag.pushed_by == f"build:{build.id}"
    # the pages (the repository made public so anyone may read them)
    public = httpx.put(
        f"{env.store_url}/api/v1/repositories/acme/app/visibility",
        json={"visibility": "public"},
        headers={"Authorization": f"Bearer {env.token}"},
        timeout=30,
    )
    assert public.status_code == 200, public.text
    page = httpx.get(f"{env.store_url}/r/acme/app/builds/{build_id}", timeout=30)
    assert page.status_code == 200
    assert "Succeeded" in page.text and build.digest in page.text
    assert "acme/app:latest" in page.text and "==&gt; Pushed" in page.text
    listing = httpx.get(f"{env.store_url}/r/acme/app/builds", timeout=30)
    assert listing.status_code == 200 and build_id in listing.text and "latest" in listing.text


def test_broken_dockerfile_fails_and_pushes_nothing(env: Env) -> None:
    sha = env.commit("broken-step", BROKEN, "a step that fails")
    queued = env.webhook("broken-step", sha)
    [build_id] = queued.json()["builds"]
    env.work_off_queue()
    build = env.build(build_id)
    log = env.log(build_id)
    assert build.status == "failed", log
    assert build.digest is None and build.docker_tag == "broken-step"
    assert "the build failed" in build.error
    assert "compiling the broken step" in log and "Nothing was pushed" in log
    missing = env.skopeo.run(
        "inspect", "--tls-verify=false", "--creds", f"alice:{PASSWORD}",
        f"docker://{env.registry}/acme/app:broken-step",
    )  # fmt: skip
    assert missing.returncode != 0
    assert "manifest unknown" in missing.stderr.lower() or "not found" in missing.stderr.lower()


def test_forged_webhook_is_refused_and_builds_nothing(env: Env) -> None:
    before = env.builds()
    sha = env.git("rev-parse", "main")
    forged = env.webhook("main", sha, secret="guessed-secret")
    assert forged.status_code == 401 and forged.json()["error"] == "bad_signature"
    assert env.builds() == before


SLOW = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo "a long step begins" && sleep 60
"""


def _wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_timeout_stops_the_step_and_pushes_nothing(env: Env) -> None:
    sha = env.commit("slow-timeout", SLOW, "a step that outlasts its timeout")
    [build_id] = env.webhook("slow-timeout", sha).json()["builds"]
    with session_scope(env.factory) as session:
        build = session.get(Build, uuid.UUID(build_id))
        assert build is not None
        build.timeout_seconds = 4  # below what the settings accept, to keep the test short
    started = time.monotonic()
    env.work_off_queue()
    build = env.build(build_id)
    assert build.status == "failed" and build.error.startswith("timed out after"), build.error
    assert time.monotonic() - started < 50  # stopped, not waited out (sleep 60)
    log = env.log(build_id)
    assert "a long step begins" in log and "Nothing was pushed" in log
    assert env.skopeo.run(
        "inspect", "--tls-verify=false", "--creds", f"alice:{PASSWORD}",
        f"docker://{env.registry}/acme/app:slow-timeout",
    ).returncode != 0  # fmt: skip


def test_cancel_stops_a_running_build(env: Env) -> None:
    sha = env.commit("slow-cancel", SLOW, "a step to cancel")
    [build_id] = env.webhook("slow-cancel", sha).json()["builds"]
    # what a worker killed in the middle of a build leaves behind: the next worker removes it
    builds_dir = Path(env.store_env["STORE_BUILDS_DIR"])
    for part in ("work", "storage"):
        (builds_dir / part / uuid.uuid4().hex / "src").mkdir(parents=True)
    output = env.root / "cancel-worker.log"
    with open(output, "wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "store.cli.main", "builds", "worker", "--once"],
            env=env.store_env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert _wait_for(lambda: "a long step begins" in env.log(build_id)), env.log(build_id)
        canceled = httpx.post(
            f"{env.store_url}/api/v1/repositories/acme/app/builds/{build_id}/cancel",
            headers={"Authorization": f"Bearer {env.token}"},
            timeout=30,
        )
        assert canceled.status_code == 200 and canceled.json()["cancel_requested"] is True
        worker.wait(timeout=40)  # well before the step's 60 s
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    build = env.build(build_id)
    assert build.status == "canceled" and build.digest is None, output.read_text()
    assert "Build canceled" in env.log(build_id)


def test_workspaces_and_storage_are_removed(env: Env) -> None:
    builds_dir = Path(env.store_env["STORE_BUILDS_DIR"])
    for part in ("work", "storage"):
        assert list((builds_dir / part).iterdir()) == [], part
