"""End to end: automated builds from a private Git repository over ssh with a deploy key.

An unprivileged OpenSSH server (``sshd -D -f <config>`` on a loopback port, its own host
key, git-shell as the only command) serves a bare repository; the store makes the build
source's deploy key and its public half becomes the server's only authorized key. Proven:

* the build clones over ssh with that key, the first fetch records the server's host key
  (trust on first use, fingerprint in the log and the API) and later builds require it;
* a server whose host key changed fails the build with a clear error until the owner pins
  the new key (``ssh-keyscan`` lines); pinned keys then build again;
* a key the server does not accept (removed, or a new one not yet added) fails the build
  with a clear error and pushes nothing;
* the private key appears in no build log, no API answer, no page and no process output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.builds import service
from store.builds.models import Build, BuildSource
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope
from tests.e2e.registry_env import (
    MISSING,
    Process,
    Skopeo,
    clean_env,
    free_port,
    python_cli,
    running_stack,
    start,
)
from tests.e2e.test_builds_e2e import BUSYBOX, DOCKERFILE
from tests.factories import PASSWORD, api_token, make_account, make_org

SSHD = Path("/usr/sbin/sshd")
GIT_SHELL = shutil.which("git-shell")
NEEDED = [n for n in ("git", "buildah", "ssh-keygen", "ssh-keyscan") if not shutil.which(n)]
NEEDED += MISSING + ([] if SSHD.exists() else ["openssh-server"])
if not BUSYBOX.exists():
    NEEDED.append("busybox-static")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(bool(NEEDED), reason=f"needs {', '.join(NEEDED)} installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation runs as root"),
]
SECRET = "e2e-secret-key-0123456789abcdef"


def _run(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


@dataclass
class Sshd:
    """An OpenSSH server on a loopback port serving Git through git-shell only."""

    root: Path
    port: int
    logs: Path
    process: Process | None = None
    generation: int = 0

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    def host_key(self) -> Path:
        return self.root / f"host_ed25519_{self.generation}"

    def fingerprint(self) -> str:
        """``ssh-ed25519 SHA256:…`` of the current host key."""
        bits, fp, *_rest, kind = _run("ssh-keygen", "-l", "-f", f"{self.host_key()}.pub").split()
        assert bits == "256" and kind == "(ED25519)"
        return f"ssh-ed25519 {fp}"

    def start(self, *, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key or not self.host_key().exists():
            self.generation += 1
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key()))
        config = self.root / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.host_key()}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {_user()}\nLogLevel VERBOSE\n"
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        _run(str(SSHD), "-t", "-f", str(config))
        self.process = start(
            f"sshd-{self.generation}",
            [str(SSHD), "-D", "-e", "-f", str(config)],
            env=clean_env({}),
            cwd=self.root,
            logs=self.logs,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.proc.poll() is None, self.process.log()
            if _run("ssh-keyscan", "-p", str(self.port), "127.0.0.1", check=False).strip():
                return
            time.sleep(0.2)
        raise TimeoutError(f"sshd did not answer: {self.process.log()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def authorize(self, public_key: str | None) -> None:
        line = f'restrict,command="{GIT_SHELL} -c \\"$SSH_ORIGINAL_COMMAND\\"" {public_key}\n'
        self.authorized_keys.write_text(line if public_key else "")

    def scan(self) -> str:
        return _run("ssh-keyscan", "-t", "ed25519", "-p", str(self.port), "127.0.0.1")


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class Env:
    root: Path
    store_url: str
    registry: str
    factory: sessionmaker[Session]
    store_env: dict[str, str]
    token: str
    bare: Path
    work: Path
    sshd: Sshd
    skopeo: Skopeo
    stack: list[Process]
    outputs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ssh://{_user()}@127.0.0.1:{self.sshd.port}{self.bare}"

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        answer = httpx.request(
            method,
            f"{self.store_url}/api/v1/repositories/acme/private-app{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            **kwargs,  # type: ignore[arg-type]
        )
        self.outputs.append(answer.text)
        return answer

    def configure(self, **extra: object) -> dict[str, object]:
        answer = self.api(
            "PUT",
            "/build-source",
            json={
                "url": self.url,
                "rules": [{"ref_kind": "branch", "pattern": "*", "docker_tag": "{ref}"}],
                "timeout_seconds": 600,
                **extra,
            },
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def commit(self, branch: str) -> str:
        git_env = clean_env({"HOME": str(self.root), "GIT_AUTHOR_NAME": "Dev",
                             "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "Dev",
                             "GIT_COMMITTER_EMAIL": "dev@example.com"})  # fmt: skip

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(self.work), *args], capture_output=True, text=True,
                check=True, timeout=60, env=git_env,
            ).stdout.strip()  # fmt: skip

        git("checkout", "-q", "-B", branch)
        (self.work / "Dockerfile").write_text(DOCKERFILE)
        git("add", "-A")
        git("commit", "-q", "--allow-empty", "-m", f"build {branch}")
        git("push", "-q", "origin", branch)  # a local push: the store fetches over ssh
        return git("rev-parse", "HEAD")

    def build(self, branch: str) -> tuple[Build, str]:
        sha = self.commit(branch)
        queued = self.api("POST", "/builds", json={"ref": branch, "commit_sha": sha})
        assert queued.status_code == 201, queued.text
        build_id = queued.json()["id"]
        done = python_cli("builds", "worker", "--once", "--json", env=self.store_env)
        self.outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
        log = self.api("GET", f"/builds/{build_id}/log")
        assert log.status_code == 200, log.text
        with self.factory() as session:
            build = session.get(Build, uuid.UUID(build_id))
            assert build is not None
        return build, str(log.json()["text"])

    def pushed(self, tag: str) -> bool:
        return (
            self.skopeo.run(
                "inspect", "--tls-verify=false", "--creds", f"alice:{PASSWORD}",
                f"docker://{self.registry}/acme/private-app:{tag}",
            ).returncode
            == 0
        )  # fmt: skip

    def private_key(self) -> str:
        settings = Settings(secret_key=SECRET, data_dir=self.root / "store-data")
        with self.factory() as session:
            source = session.query(BuildSource).one()
            return service.deploy_key(settings, source) or ""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("builds-ssh-e2e")
    data_dir = root / "store-data"
    data_dir.mkdir()
    shm = Path("/dev/shm")
    builds_dir = (shm if shm.is_dir() and os.access(shm, os.W_OK) else root) / (
        f"store-builds-ssh-{uuid.uuid4().hex[:8]}"
    )
    store_port, registry_port = free_port(), free_port()
    store_url = f"http://127.0.0.1:{store_port}"
    registry = f"127.0.0.1:{registry_port}"
    store_env = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_SECRET_KEY": SECRET,
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
    bare, work = root / "private-app.git", root / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True,
                   capture_output=True)  # fmt: skip
    shutil.copy(BUSYBOX, work / "busybox")
    sshd_root = root / "sshd"
    sshd_root.mkdir()
    logs = root / "sshd-logs"
    logs.mkdir()
    sshd = Sshd(sshd_root, free_port(), logs)
    home = root / "home"
    home.mkdir()
    try:
        sshd.start()
        with running_stack(root, store_env, store_port=store_port, registry=registry) as stack:
            yield Env(
                root, store_url, registry, factory, store_env, token, bare, work, sshd,
                Skopeo(registry, home), stack,
            )  # fmt: skip
    finally:
        sshd.stop()
        engine.dispose()
        shutil.rmtree(builds_dir, ignore_errors=True)


def test_builds_clone_over_ssh_with_the_deploy_key_and_pin_the_host_key(env: Env) -> None:
    source = env.configure(generate_deploy_key=True)
    public = str(source["deploy_public_key"])
    assert public.startswith("ssh-ed25519 AAAA") and public.endswith("store-build@acme/private-app")
    assert source["has_deploy_key"] is True and source["host_key_fingerprints"] == []
    env.sshd.authorize(public)

    build, log = env.build("first")
    assert build.status == "succeeded", f"{build.error}\n{log}\n{env.outputs[-1]}"
    assert build.digest and env.pushed("first")
    first_use = env.sshd.fingerprint()
    assert f"Trusted the ssh host key of 127.0.0.1:{env.sshd.port} on first use" in log
    assert first_use in log
    shown = env.api("GET", "/build-source").json()
    assert shown["host_key_fingerprints"] == [first_use]
    assert shown["known_hosts_pinned"] is False
    assert f"[127.0.0.1]:{env.sshd.port} ssh-ed25519 " in shown["known_hosts"]
    # the server saw the deploy key, the one the store showed
    key_file = env.root / "deploy.pub"
    key_file.write_text(public + "\n")
    deploy_fp = _run("ssh-keygen", "-l", "-f", str(key_file)).split()[1]
    assert env.sshd.process is not None
    assert f"Accepted publickey for {_user()}" in env.sshd.process.log()
    assert deploy_fp in env.sshd.process.log()

    # the second build requires the recorded key, and records nothing new
    again, log = env.build("second")
    assert again.status == "succeeded", f"{again.error}\n{log}"
    assert "on first use" not in log

    # the server's host key changes: refused until the owner decides
    env.sshd.start(new_host_key=True)
    changed, log = env.build("changed-host-key")
    assert changed.status == "failed", log
    assert changed.error.startswith(
        f"the ssh host key of 127.0.0.1:{env.sshd.port} is not the one the build settings trust"
    ), changed.error
    assert first_use in changed.error and "Nothing was pushed" in log
    assert not env.pushed("changed-host-key")
    assert env.api("GET", "/build-source").json()["host_key_fingerprints"] == [first_use]

    # the owner pins the new key (as ssh-keyscan prints it): builds work again
    pinned = env.configure(known_hosts=env.sshd.scan())
    assert pinned["known_hosts_pinned"] is True
    assert pinned["host_key_fingerprints"] == [env.sshd.fingerprint()]
    after, log = env.build("pinned")
    assert after.status == "succeeded", f"{after.error}\n{log}"
    assert "on first use" not in log and env.pushed("pinned")


def test_a_key_the_server_refuses_fails_clearly_and_the_key_stays_secret(env: Env) -> None:
    source = env.configure(generate_deploy_key=True)  # a new key, not yet on the server
    env.sshd.authorize(str(source["deploy_public_key"]))
    ok, log = env.build("accepted")
    assert ok.status == "succeeded", f"{ok.error}\n{log}"

    env.sshd.authorize(None)  # the deploy key removed from the server
    refused, log = env.build("removed-key")
    assert refused.status == "failed", log
    assert refused.error == (
        f"the ssh server 127.0.0.1:{env.sshd.port} refused the deploy key: add the deploy "
        "key's public half (shown in the build settings) to the Git repository, or set "
        "another key"
    )
    assert "Permission denied (publickey)" in log and "Nothing was pushed" in log
    assert not env.pushed("removed-key")

    rotated = env.configure(generate_deploy_key=True)  # replaced, the old one authorized
    env.sshd.authorize(str(source["deploy_public_key"]))
    assert rotated["deploy_public_key"] != source["deploy_public_key"]
    stale, log = env.build("old-key-on-server")
    assert stale.status == "failed" and "refused the deploy key" in stale.error

    # the private key is nowhere but sealed in the database
    private = env.private_key()
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    secret_lines = [ln for ln in private.splitlines() if ln and not ln.startswith("-----")]
    assert secret_lines
    with httpx.Client(base_url=env.store_url, timeout=30) as web:
        login = web.get("/login")
        csrf = login.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        web.post("/login", data={"login": "alice", "password": PASSWORD,
                                 "csrf_token": csrf})  # fmt: skip
        page = web.get("/r/acme/private-app/builds")
        assert page.status_code == 200 and str(rotated["deploy_public_key"]) in page.text
        env.outputs.append(page.text)
        for build_id in [b["id"] for b in env.api("GET", "/builds").json()]:
            env.outputs.append(web.get(f"/r/acme/private-app/builds/{build_id}").text)
            env.api("GET", f"/builds/{build_id}/log")
    env.outputs.extend(p.log() for p in env.stack)
    assert env.sshd.process is not None
    env.outputs.append(env.sshd.process.log())
    seen = "\n".join(env.outputs)
    assert "PRIVATE KEY-----\n" not in seen  # (the page's placeholder is one line)
    for line in secret_lines:
        assert line not in seen
    with env.factory() as session:
        sealed = session.query(BuildSource).one().deploy_key_sealed or ""
    assert sealed.startswith("v1:") and secret_lines[1] not in sealed
