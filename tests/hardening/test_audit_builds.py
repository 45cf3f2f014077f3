"""Build sources as an attacker sees them: what a Git URL may carry, and what a build's log
shows to whoever may pull the repository (docs/builds.md, "Who"; docs/security.md)."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.builds import queue, service, worker
from store.config import Settings
from tests.factories import api_token, auth, make_account, make_org

SECRET = "ghp_0123456789abcdefSECRET"
RULES = [{"ref_kind": "branch", "pattern": "main", "docker_tag": "latest"}]


def test_a_token_in_an_https_url_is_refused(client: TestClient, session: Session) -> None:
    alice = make_account(session, "alice")
    make_org(session, alice, "acme")
    token = api_token(session, alice)
    session.commit()
    for url in (
        f"https://{SECRET}@github.com/acme/app.git",  # GitHub takes a token as the user name
        f"https://x-access-token:{SECRET}@github.com/acme/app.git",
    ):
        answer = client.put(
            "/api/v1/repositories/acme/app/build-source",
            json={"url": url, "rules": RULES},
            headers=auth(token),
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "bad_source_url" and SECRET not in answer.text
    # an ssh user name is no secret
    fine = client.put(
        "/api/v1/repositories/acme/app/build-source",
        json={"url": "ssh://git@github.com/acme/app.git", "rules": RULES},
        headers=auth(token),
    )
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize(
    "url",
    [
        "ssh://-oProxyCommand=touch${IFS}pwned/app.git",
        "ssh://git@-oProxyCommand=touch${IFS}pwned/app.git",
        "ssh://-oProxyCommand=x@github.com/acme/app.git",
        "ssh://git@github.com:-oProxyCommand=x/acme/app.git",
        "git@-oProxyCommand=touch${IFS}pwned:app.git",
    ],
)
def test_ssh_options_in_the_url_are_refused(client: TestClient, session: Session, url: str) -> None:
    """git refuses such hosts itself (since 2.14.1); the store does not rely on the
    worker's git being that recent."""
    alice = make_account(session, "alice")
    token = api_token(session, alice)
    session.commit()
    answer = client.put(
        "/api/v1/repositories/alice/app/build-source",
        json={"url": url, "rules": RULES},
        headers=auth(token),
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "bad_source_url"


class _Log:
    def __init__(self) -> None:
        self.text = ""
        self.lost = self.canceled = False

    def write(self, text: str) -> None:
        self.text += text

    def due(self) -> bool:
        return False

    def flush(self) -> None:
        pass


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_token_saved_in_an_older_source_url_stays_out_of_the_log(
    settings: Settings, tmp_path: Path
) -> None:
    """Readers of a repository see its builds' logs, not its source settings: a URL saved
    before the check above is shown without its user part."""
    url = f"https://{SECRET}@127.0.0.1:9/acme/app.git"  # nothing listens: fails at once
    fields: dict[str, Any] = {
        "build_id": uuid.uuid4(),
        "token": "t",
        "repository": "acme/app",
        "namespace": "acme",
        "source_url": url,
        "ref": "refs/heads/main",
        "commit_sha": None,
        "docker_tag": "latest",
        "dockerfile": "Dockerfile",
        "context": ".",
        "build_args": {},
        "timeout_seconds": 60,
        "deploy_key_sealed": None,
    }
    names = {f for f in queue.Claimed.__dataclass_fields__}
    for extra in names - set(fields):
        fields[extra] = None
    run = worker.Run.__new__(worker.Run)
    run.settings = settings
    run.claimed = queue.Claimed(**fields)
    run.tools = worker.Tools(git=str(shutil.which("git")), buildah="/bin/false")
    run.workspace = tmp_path / "work"
    run.workspace.mkdir()
    run.deadline = time.monotonic() + 60
    log = _Log()
    run.log = log  # type: ignore[assignment]
    with pytest.raises(worker.BuildFailed) as failed:
        run.fetch(run._env())
    assert "127.0.0.1" in log.text  # the log did say where it fetched from
    assert SECRET not in log.text and SECRET not in str(failed.value)
    assert SECRET not in (failed.value.output or "")
    assert service.shown_url(url) == "https://127.0.0.1:9/acme/app.git"


def test_symbolic_links_out_of_the_checkout_are_refused(tmp_path: Path) -> None:
    """A Dockerfile path or context that is a link in the repository leading elsewhere (the
    server's files, another build's workspace) fails the build before buildah runs."""
    run = worker.Run.__new__(worker.Run)
    run.workspace = tmp_path / "work"
    src = run.workspace / "src"
    (src / "docker").mkdir(parents=True)
    (src / "docker" / "Dockerfile").write_text("FROM scratch\n")
    other = tmp_path / "other-build" / "src"
    other.mkdir(parents=True)
    (src / "Dockerfile").symlink_to("/etc/passwd")
    (src / "ctx").symlink_to(other)
    (src / "docker" / "up").symlink_to("../../other-build")
    for relative, what in (
        ("Dockerfile", "Dockerfile"),
        ("ctx", "context"),
        ("docker/up", "context"),
    ):
        with pytest.raises(worker.BuildFailed, match="leads outside the repository"):
            run._inside(relative, what)
    assert (
        run._inside("docker/Dockerfile", "Dockerfile") == (src / "docker" / "Dockerfile").resolve()
    )
