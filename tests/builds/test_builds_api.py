"""Build sources, rules, triggers and webhooks through the JSON API, on SQLite and
PostgreSQL: who may configure (whoever may push, by the registry's one rule), signature
checks of the three webhook forms, replayed deliveries, manual builds and cancel."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.builds import queue, service
from store.builds.models import Build
from store.config import Settings
from store.registry import tokens
from store.registry.models import HubRepository
from tests.factories import api_token, auth, make_account, make_admin, make_org

SHA = "a" * 40
SOURCE = {
    "url": "https://git.example.com/acme/app.git",
    "rules": [
        {"ref_kind": "branch", "pattern": "main", "docker_tag": "latest"},
        {"ref_kind": "tag", "pattern": "v*", "docker_tag": "{ref}", "dockerfile": "docker/Dockerfile",
         "context": "docker", "build_args": {"VERSION": "1"}},
    ],
}  # fmt: skip


@pytest.fixture
def people(session: Session) -> dict[str, Any]:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    admin = make_admin(session)
    viewer = make_account(session, "vic")
    accounts.add_member(session, actor=admin, org=acme, account=viewer, role="viewer")
    editor = make_account(session, "eddie")
    accounts.add_member(session, actor=admin, org=acme, account=editor, role="editor")
    outsider = make_account(session, "olga")
    session.commit()
    return {
        "alice": api_token(session, alice),
        "viewer": api_token(session, viewer),
        "editor": api_token(session, editor),
        "outsider": api_token(session, outsider),
    }


def _configure(client: TestClient, token: str, body: dict[str, Any] | None = None) -> Any:
    return client.put(
        "/api/v1/repositories/acme/app/build-source", json=body or SOURCE, headers=auth(token)
    )


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Build)) or 0


def _github(secret: str, body: bytes, delivery: str) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
    }


def _push(ref: str = "refs/heads/main", sha: str = SHA) -> bytes:
    return json.dumps({"ref": ref, "after": sha, "repository": {"name": "app"}}).encode()


def test_pushers_configure_and_others_are_refused(
    client: TestClient, session: Session, people: dict[str, str]
) -> None:
    created = _configure(client, people["editor"])
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["webhook_secret"] and len(body["webhook_secret"]) >= 32
    assert body["webhook_url"].endswith("/api/v1/repositories/acme/app/builds/webhook")
    assert [r["docker_tag"] for r in body["rules"]] == ["latest", "{ref}"]
    # the hub repository is made when it did not exist yet
    assert session.scalar(select(HubRepository).where(HubRepository.name == "acme/app"))
    # saved again: the secret is not shown again unless rotated
    again = _configure(client, people["alice"])
    assert again.status_code == 200 and again.json()["webhook_secret"] is None
    rotated = _configure(client, people["alice"], {**SOURCE, "rotate_webhook_secret": True})
    assert rotated.json()["webhook_secret"] not in (None, body["webhook_secret"])

    viewer = _configure(client, people["viewer"])
    assert viewer.status_code == 403 and viewer.json()["error"] == "push_required"
    outsider = _configure(client, people["outsider"])
    assert outsider.status_code == 404
    assert (
        client.get(
            "/api/v1/repositories/acme/app/build-source", headers=auth(people["outsider"])
        ).status_code
        == 404
    )
    shown = client.get("/api/v1/repositories/acme/app/build-source", headers=auth(people["alice"]))
    assert shown.status_code == 200 and shown.json()["webhook_secret"] is None
    assert client.put("/api/v1/repositories/acme/app/build-source", json=SOURCE).status_code == 401


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"url": "ftp://example.com/x.git"}, "bad_source_url", "url"),
        ({"url": "--upload-pack=touch /tmp/x"}, "bad_source_url", "url"),
        ({"url": "https://user:pw@example.com/x.git"}, "bad_source_url", "url"),
        ({"rules": []}, "bad_rule", "rules"),
        ({"rules": [{"ref_kind": "commit", "pattern": "x", "docker_tag": "t"}]}, "bad_rule", "rules"),
        ({"rules": [{"ref_kind": "branch", "pattern": "main", "docker_tag": "bad tag"}]}, "bad_rule", "rules"),
        ({"rules": [{"ref_kind": "branch", "pattern": "main", "docker_tag": "{branch}"}]}, "bad_rule", "rules"),
        ({"rules": [{"ref_kind": "branch", "pattern": "main", "docker_tag": "t",
                     "dockerfile": "../Dockerfile"}]}, "bad_rule", "rules"),
        ({"rules": [{"ref_kind": "branch", "pattern": "main", "docker_tag": "t",
                     "context": "/etc"}]}, "bad_rule", "rules"),
        ({"rules": [{"ref_kind": "branch", "pattern": "main", "docker_tag": "t",
                     "build_args": {"1BAD": "x"}}]}, "bad_rule", "rules"),
        ({"deploy_key": "not a key"}, "bad_deploy_key", "deploy_key"),
        ({"schedule_minutes": 1}, "bad_schedule", "schedule_minutes"),
        ({"timeout_seconds": 5}, "bad_timeout", "timeout_seconds"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_and_nothing_is_saved(
    client: TestClient,
    session: Session,
    people: dict[str, str],
    change: dict[str, Any],
    code: str,
    field: str,
) -> None:
    answer = _configure(client, people["alice"], {**SOURCE, **change})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == code
    assert answer.json()["field"] == field  # the input at fault, as the page shows it
    assert service.get_source(session, "acme/app") is None


def test_local_sources_only_outside_production(settings: Settings) -> None:
    assert service.validate_url(settings, "/srv/git/app.git") == "/srv/git/app.git"
    assert service.validate_url(settings, "file:///srv/git/app.git")
    assert service.validate_url(settings, "git@github.com:acme/app.git")
    production = settings.model_copy(update={"environment": "production"})
    with pytest.raises(service.ValidationFailed, match="development only"):
        service.validate_url(production, "/srv/git/app.git")


def test_signed_github_push_queues_one_build_and_a_replay_none(
    client: TestClient, session: Session, people: dict[str, str]
) -> None:
    secret = _configure(client, people["alice"]).json()["webhook_secret"]
    url = "/api/v1/repositories/acme/app/builds/webhook"
    body = _push()
    delivery = str(uuid.uuid4())
    answer = client.post(url, content=body, headers=_github(secret, body, delivery))
    assert answer.status_code == 200, answer.text
    [build_id] = answer.json()["builds"]
    build = session.get(Build, uuid.UUID(build_id))
    assert build is not None
    assert (build.status, build.commit_sha, build.docker_tag, build.trigger) == (
        "queued", SHA, "latest", "webhook",
    )  # fmt: skip
    replay = client.post(url, content=body, headers=_github(secret, body, delivery))
    assert replay.status_code == 200 and replay.json() == {
        "message": "delivery already received", "builds": [], "duplicate": True,
    }  # fmt: skip
    # the same commit redelivered under a new id while its build is queued: still one
    again = client.post(url, content=body, headers=_github(secret, body, str(uuid.uuid4())))
    assert again.json()["builds"] == []
    assert _count(session) == 1

    tag = _push("refs/tags/v1.2", "b" * 40)
    tagged = client.post(url, content=tag, headers=_github(secret, tag, str(uuid.uuid4())))
    build = session.get(Build, uuid.UUID(tagged.json()["builds"][0]))
    assert build is not None
    assert (build.docker_tag, build.dockerfile, build.context, build.build_args) == (
        "v1.2", "docker/Dockerfile", "docker", {"VERSION": "1"},
    )  # fmt: skip
    other = _push("refs/heads/feature")
    ignored = client.post(url, content=other, headers=_github(secret, other, str(uuid.uuid4())))
    assert ignored.json()["message"] == "no build rule matches refs/heads/feature"
    deleted = _push(sha="0" * 40)
    gone = client.post(url, content=deleted, headers=_github(secret, deleted, str(uuid.uuid4())))
    assert gone.json()["builds"] == []
    assert _count(session) == 2


def test_forged_webhooks_are_401_and_build_nothing(
    client: TestClient, session: Session, people: dict[str, str]
) -> None:
    secret = _configure(client, people["alice"]).json()["webhook_secret"]
    url = "/api/v1/repositories/acme/app/builds/webhook"
    body = _push()
    forged = [
        _github("not-the-secret", body, "d1"),
        {**_github(secret, b"other body", "d2")},
        {"X-Gitlab-Token": "guess", "X-Gitlab-Event-UUID": "d3"},
        service.sign_generic("wrong", body, delivery="d4", timestamp=int(time.time())),
        # right secret, but an old timestamp (a captured delivery replayed later)
        service.sign_generic(secret, body, delivery="d5", timestamp=int(time.time()) - 3600),
        {},  # unsigned
    ]
    for headers in forged:
        answer = client.post(url, content=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"] == "bad_signature"
    # a repository without builds answers the same as a wrong signature
    missing = client.post(
        "/api/v1/repositories/acme/none/builds/webhook",
        content=body,
        headers=_github(secret, body, "d6"),
    )
    assert missing.status_code == 401
    assert _count(session) == 0


def test_gitlab_and_generic_forms(
    client: TestClient, session: Session, people: dict[str, str]
) -> None:
    secret = _configure(client, people["alice"]).json()["webhook_secret"]
    url = "/api/v1/repositories/acme/app/builds/webhook"
    gitlab = json.dumps({"ref": "refs/heads/main", "checkout_sha": "c" * 40}).encode()
    answer = client.post(
        url, content=gitlab, headers={"X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": "g1"}
    )
    assert answer.status_code == 200 and len(answer.json()["builds"]) == 1
    body = _push(sha="d" * 40)
    headers = service.sign_generic(secret, body, delivery="x1", timestamp=int(time.time()))
    answer = client.post(url, content=body, headers=headers)
    assert answer.status_code == 200 and len(answer.json()["builds"]) == 1
    # the delivery id is signed in the generic form: another id with the same signature fails
    moved = {**headers, "X-Store-Delivery": "x2"}
    assert client.post(url, content=body, headers=moved).status_code == 401
    nodelivery = client.post(url, content=gitlab, headers={"X-Gitlab-Token": secret})
    assert nodelivery.status_code == 422
    assert _count(session) == 2


def test_manual_builds_history_and_cancel(
    client: TestClient, session: Session, people: dict[str, str]
) -> None:
    _configure(client, people["alice"])
    base = "/api/v1/repositories/acme/app/builds"
    started = client.post(base, json={"ref": "main"}, headers=auth(people["editor"]))
    assert started.status_code == 201, started.text
    build = started.json()
    assert (build["status"], build["trigger"], build["triggered_by"], build["commit_sha"]) == (
        "queued", "manual", "eddie", None,
    )  # fmt: skip
    pinned = client.post(
        base, json={"ref": "tag:v2", "commit_sha": "E" * 40}, headers=auth(people["alice"])
    )
    assert pinned.status_code == 201 and pinned.json()["docker_tag"] == "v2"
    assert pinned.json()["commit_sha"] == "e" * 40
    latest_tag = client.post(base, json={"ref": "tag:v3"}, headers=auth(people["alice"]))
    assert latest_tag.json()["docker_tag"] == "v3" and latest_tag.json()["commit_sha"] is None
    refused = client.post(base, json={"ref": "main"}, headers=auth(people["viewer"]))
    assert refused.status_code == 403
    norule = client.post(base, json={"ref": "feature"}, headers=auth(people["alice"]))
    assert norule.status_code == 422 and norule.json()["error"] == "no_rule"
    assert norule.json()["field"] == "ref"
    badref = client.post(base, json={"ref": "bad..ref"}, headers=auth(people["alice"]))
    assert badref.status_code == 422 and badref.json()["field"] == "ref"
    badsha = client.post(
        base, json={"ref": "main", "commit_sha": "abc"}, headers=auth(people["alice"])
    )
    assert badsha.status_code == 422 and badsha.json()["field"] == "commit_sha"

    listed = client.get(base, headers=auth(people["viewer"]))
    assert [b["id"] for b in listed.json()] == [
        latest_tag.json()["id"], pinned.json()["id"], build["id"],
    ]  # fmt: skip
    assert client.get(base, headers=auth(people["outsider"])).status_code == 404
    assert client.get(base).status_code == 404  # private repository, anonymous

    cancel = f"{base}/{build['id']}/cancel"
    assert client.post(cancel, headers=auth(people["viewer"])).status_code == 403
    canceled = client.post(cancel, headers=auth(people["editor"]))
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert client.post(cancel, headers=auth(people["editor"])).status_code == 409
    log = client.get(f"{base}/{build['id']}/log", headers=auth(people["viewer"]))
    assert log.json()["final"] is True and log.json()["text"] == ""
    other = client.get(
        f"/api/v1/repositories/acme/other/builds/{build['id']}", headers=auth(people["alice"])
    )
    assert other.status_code == 404


def test_schedule_queues_named_branches_once(
    client: TestClient, session: Session, people: dict[str, str]
) -> None:
    _configure(client, people["alice"], {**SOURCE, "schedule_minutes": 60})
    source = service.get_source(session, "acme/app")
    assert source is not None and source.next_scheduled_at is not None
    due = source.next_scheduled_at
    assert service.queue_scheduled(session, now=due - timedelta(seconds=1)) == []
    assert service.queue_scheduled(session, now=due) != []
    builds = session.scalars(select(Build)).all()
    # the branch rule names one branch; the tag rule (v*) is not built on a schedule
    assert [(b.ref, b.trigger, b.commit_sha) for b in builds] == [
        ("refs/heads/main", "schedule", None)
    ]
    assert service.queue_scheduled(session, now=due + timedelta(minutes=1)) == []
    assert source.next_scheduled_at == due + timedelta(minutes=60)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_build_credential_pushes_to_its_repository_only_while_running(
    client: TestClient, session: Session, settings: Settings, people: dict[str, str]
) -> None:
    _configure(client, people["alice"])
    started = client.post(
        "/api/v1/repositories/acme/app/builds", json={"ref": "main"}, headers=auth(people["alice"])
    )
    build = session.get(Build, uuid.UUID(started.json()["id"]))
    assert build is not None
    user, password = queue.credential(settings, build.id, expires=int(time.time()) + 300)

    def token(scope: str) -> Any:
        return client.get(
            "/token",
            params={"service": settings.registry_service, "scope": scope},
            headers=_basic(user, password),
        )

    queued = token("repository:acme/app:pull,push")
    assert queued.status_code == 401  # not running yet
    build.status = "running"
    session.commit()
    granted = token("repository:acme/app:pull,push")
    assert granted.status_code == 200, granted.text
    claims = tokens.decode_unverified(granted.json()["token"])[1]
    assert claims["sub"] == f"build:{build.id}"
    assert claims["access"] == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}
    ]
    # another repository of the same namespace: nothing (it is private)
    other = token("repository:acme/other:pull,push")
    assert (
        other.status_code == 401 or not tokens.decode_unverified(other.json()["token"])[1]["access"]
    )
    forged = client.get(
        "/token",
        params={"service": settings.registry_service, "scope": "repository:acme/app:push"},
        headers=_basic(user, password[:-4] + "0000"),
    )
    assert forged.status_code == 401
    build.status = "succeeded"
    session.commit()
    assert token("repository:acme/app:pull,push").status_code == 401
