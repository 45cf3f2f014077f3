"""Deploy keys and host keys of ssh build sources (API, page, worker's ssh command), on
SQLite and PostgreSQL: a made key shows only its public half; a pasted key is checked and
its public half derived; pinned host keys are checked and fingerprinted as ``ssh-keygen``
does; host keys recorded on first use are forgotten when the source moves to another
server, pinned ones are not; the worker's ssh uses only the source's key and host keys."""

from __future__ import annotations

import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.builds import queue, service, ssh, worker
from store.config import Settings
from store.db import utcnow
from tests.factories import api_token, auth, make_account, make_org
from tests.web.helpers import login, submit

URL = "ssh://git@git.example.com:2222/acme/app.git"
RULES = [{"ref_kind": "branch", "pattern": "main", "docker_tag": "latest"}]
HOST_LINE = (
    "[git.example.com]:2222 ssh-ed25519 "
    "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
)


@pytest.fixture
def token(session: Session) -> str:
    alice = make_account(session, "alice")
    make_org(session, alice, "acme")
    session.commit()
    return api_token(session, alice)


def _put(client: TestClient, token: str, **extra: Any) -> Any:
    return client.put(
        "/api/v1/repositories/acme/app/build-source",
        json={"url": URL, "rules": RULES, **extra},
        headers=auth(token),
    )


def _openssh(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
    )


def test_a_made_key_shows_only_its_public_half(
    client: TestClient, session: Session, settings: Settings, token: str
) -> None:
    made = _put(client, token, generate_deploy_key=True)
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["has_deploy_key"] is True
    assert body["deploy_public_key"].startswith("ssh-ed25519 AAAA")
    assert body["deploy_public_key"].endswith(" store-build@acme/app")
    assert "PRIVATE" not in made.text
    source = service.get_source(session, "acme/app")
    assert source is not None
    private = service.deploy_key(settings, source)
    assert private is not None and private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert private not in (source.deploy_key_sealed or "")
    loaded = serialization.load_ssh_private_key(private.encode(), password=None)
    public = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert body["deploy_public_key"].startswith(public.decode())
    # saved again without a key change: the same key; a new one when asked
    assert _put(client, token).json()["deploy_public_key"] == body["deploy_public_key"]
    again = _put(client, token, generate_deploy_key=True).json()
    assert again["deploy_public_key"] != body["deploy_public_key"]
    removed = _put(client, token, clear_deploy_key=True).json()
    assert removed["has_deploy_key"] is False and removed["deploy_public_key"] is None


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_a_pasted_key_is_read_and_its_public_half_shown(
    client: TestClient, token: str, kind: str
) -> None:
    key: Any = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    pasted = _put(client, token, deploy_key=_openssh(key).replace("\n", "\r\n"))
    assert pasted.status_code == 200, pasted.text
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert pasted.json()["deploy_public_key"] == f"{public.decode()} store-build@acme/app"


def test_bad_keys_and_host_keys_are_refused_with_their_field(
    client: TestClient, session: Session, token: str, tmp_path: Path
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(tmp_path / "k")],
        check=True,
    )
    encrypted = (tmp_path / "k").read_text()
    good = _openssh(ed25519.Ed25519PrivateKey.generate())
    cases = [
        ({"deploy_key": "not a key"}, "bad_deploy_key", "deploy_key", "is an SSH private key"),
        ({"deploy_key": encrypted}, "bad_deploy_key", "deploy_key", "no passphrase"),
        ({"deploy_key": good.replace("b3Blbn", "x3Blbn")}, "bad_deploy_key", "deploy_key",
         "could not be read"),
        ({"deploy_key": good, "generate_deploy_key": True}, "bad_deploy_key",
         ["deploy_key", "generate_deploy_key"], "not both"),
        ({"known_hosts": "git.example.com ssh-ed25519 bm90IGEga2V5"}, "bad_known_hosts",
         "known_hosts", "Line 1 of the known hosts"),
        ({"known_hosts": "# only a comment\n"}, "bad_known_hosts", "known_hosts", "no host key"),
        ({"known_hosts": "host ssh-dss AAAAB3NzaC1kc3M="}, "bad_known_hosts", "known_hosts",
         "Line 1"),
    ]  # fmt: skip
    for extra, code, field, words in cases:
        answer = _put(client, token, **extra)
        assert answer.status_code == 422, (extra, answer.text)
        assert answer.json()["error"] == code and words in answer.json()["detail"]
        assert answer.json().get("field") == field, answer.json()
    assert service.get_source(session, "acme/app") is None


def test_pinned_host_keys_and_keys_recorded_on_first_use(
    client: TestClient, session: Session, token: str, tmp_path: Path
) -> None:
    pinned = _put(client, token, known_hosts=f"# from ssh-keyscan\n{HOST_LINE}\n")
    assert pinned.status_code == 200, pinned.text
    body = pinned.json()
    assert body["known_hosts"] == HOST_LINE + "\n" and body["known_hosts_pinned"] is True
    (tmp_path / "known").write_text(HOST_LINE + "\n")
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "known")], capture_output=True, text=True
    ).stdout.split()
    assert body["host_key_fingerprints"] == [f"ssh-ed25519 {printed[1]}"]
    # pinned keys stay when the URL moves; the owner clears them
    moved = _put(client, token, url="git@other.example.com:acme/app.git").json()
    assert moved["known_hosts"] == HOST_LINE + "\n"
    cleared = _put(client, token, clear_known_hosts=True).json()
    assert cleared["known_hosts"] is None and cleared["known_hosts_pinned"] is False
    # recorded on first use (as the worker does), then the source moves to another server
    source = service.get_source(session, "acme/app")
    assert source is not None
    source.url = URL
    source.known_hosts = HOST_LINE + "\n"
    session.commit()
    same_server = _put(client, token, url="ssh://git@git.example.com:2222/acme/other.git")
    assert same_server.json()["known_hosts"] == HOST_LINE + "\n"
    assert same_server.json()["known_hosts_pinned"] is False
    other = _put(client, token, url="ssh://git@git2.example.com/acme/app.git").json()
    assert other["known_hosts"] is None and other["host_key_fingerprints"] == []


def test_ssh_hosts_of_git_urls() -> None:
    assert ssh.host("ssh://git@git.example.com:2222/a/b.git") == "git.example.com:2222"
    assert ssh.host("ssh://git.example.com/a/b.git") == "git.example.com"
    assert ssh.host("git@github.com:acme/app.git") == "github.com"
    assert ssh.host("https://github.com/acme/app.git") is None
    assert ssh.host("/srv/git/app.git") is None


def test_the_worker_ssh_uses_only_the_sources_key_and_host_keys(
    settings: Settings, tmp_path: Path
) -> None:
    private = _openssh(ed25519.Ed25519PrivateKey.generate())
    claimed = queue.Claimed(
        build_id=uuid.uuid4(), token="t", repository="acme/app", namespace="acme",
        source_url=URL, ref="refs/heads/main", commit_sha=None, docker_tag="latest",
        dockerfile="Dockerfile", context=".", build_args={}, timeout_seconds=60,
        deploy_key_sealed=service.seal(settings, private), known_hosts=HOST_LINE + "\n",
        configured_by_id=None, started_at=utcnow(),
    )  # fmt: skip
    run = worker.Run.__new__(worker.Run)
    run.settings, run.claimed, run.workspace = settings, claimed, tmp_path
    env: dict[str, str] = {}
    run._ssh(env)
    argv = shlex.split(env["GIT_SSH_COMMAND"])
    assert argv[:3] == ["ssh", "-F", "none"]
    assert "StrictHostKeyChecking=yes" in argv and "IdentityAgent=none" in argv
    assert argv[argv.index("-i") + 1] == str(tmp_path / "deploy_key")
    assert (tmp_path / "deploy_key").read_text() == private
    assert (tmp_path / "deploy_key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "known_hosts").read_text() == HOST_LINE + "\n"
    assert private not in env["GIT_SSH_COMMAND"]

    claimed.known_hosts, claimed.deploy_key_sealed = None, None
    (tmp_path / "deploy_key").unlink()
    env = {}
    run._ssh(env)
    argv = shlex.split(env["GIT_SSH_COMMAND"])
    assert "StrictHostKeyChecking=accept-new" in argv and "IdentityFile=none" in argv
    assert "-i" not in argv


def test_the_build_settings_page_makes_a_key_and_pins_host_keys(
    client: TestClient, session: Session
) -> None:
    make_account(session, "alice")
    session.commit()
    login(client, "alice")
    page = "/r/alice/app/builds"
    fields = {"url": URL, "rules": "branch main latest", "timeout": "600"}
    bad = submit(client, page, f"{page}/settings", {**fields, "known_hosts": "nonsense"})
    assert bad.status_code == 422 and "Line 1 of the known hosts" in bad.text
    made = submit(client, page, f"{page}/settings", {**fields, "generate_deploy_key": "1"})
    assert made.status_code == 200 and "The build settings are saved." in made.text
    source = service.get_source(session, "alice/app")
    assert source is not None and source.deploy_public_key
    assert source.deploy_public_key in made.text and "PRIVATE KEY-----\n" not in made.text
    pinned = submit(client, page, f"{page}/settings", {**fields, "known_hosts": HOST_LINE})
    assert pinned.status_code == 200
    assert "Pinned: <code>ssh-ed25519 SHA256:" in pinned.text
    assert "Forget these host keys" in pinned.text
