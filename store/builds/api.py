"""JSON API of automated builds, under ``/api/v1/repositories/<namespace>/<repo>/``:
``build-source`` (the Git source and rules), ``builds`` (history, start, one build, its log,
cancel) and ``builds/webhook`` (push deliveries, authenticated by their signature)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from store.accounts.caller import Caller, CurrentAccount
from store.builds import service, ssh
from store.builds.models import Build, BuildSource
from store.config import Settings
from store.deps import DbSession, SettingsDep
from store.errors import NotFound

router = APIRouter(tags=["builds"])


class RuleIn(BaseModel):
    ref_kind: str = Field(description="branch or tag")
    pattern: str = Field(description="glob of branch or tag names, e.g. main, release/*, v*")
    docker_tag: str = Field(description="the tag to push; {ref} and {sha} are replaced")
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: dict[str, str] = Field(default_factory=dict)


class SourceIn(BaseModel):
    url: str = Field(
        description="https://, ssh:// or user@host:path (a path or file:// in development)"
    )
    rules: list[RuleIn]
    deploy_key: str | None = Field(
        default=None,
        description="an SSH private key for ssh sources (unencrypted); or generate_deploy_key",
    )
    generate_deploy_key: bool = Field(
        default=False,
        description="make a new Ed25519 deploy key; add its public half to the Git server",
    )
    clear_deploy_key: bool = False
    known_hosts: str | None = Field(
        default=None,
        description="pin the ssh server's host keys (known_hosts lines, as ssh-keyscan prints"
        " them); without, the first fetch records the server's key (trust on first use)",
    )
    clear_known_hosts: bool = Field(
        default=False, description="forget the host keys (the next fetch records them again)"
    )
    schedule_minutes: int | None = None
    timeout_seconds: int | None = None
    rotate_webhook_secret: bool = False


class SourceOut(BaseModel):
    repository: str
    url: str
    rules: list[RuleIn]
    has_deploy_key: bool
    deploy_public_key: str | None = Field(
        description="the public half of the deploy key, for the Git server's deploy keys"
    )
    known_hosts: str | None = Field(description="the ssh host keys builds accept")
    known_hosts_pinned: bool = Field(
        description="true: set by the owner; false: recorded on the first fetch (if any)"
    )
    host_key_fingerprints: list[str]
    schedule_minutes: int | None
    next_scheduled_at: datetime | None
    timeout_seconds: int
    webhook_url: str
    webhook_secret: str | None = Field(
        default=None, description="shown when the source is created or its secret rotated"
    )


class BuildOut(BaseModel):
    id: uuid.UUID
    repository: str
    status: str
    trigger: str
    triggered_by: str
    ref: str
    commit_sha: str | None
    docker_tag: str
    dockerfile: str
    context: str
    digest: str | None
    error: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool


class TriggerIn(BaseModel):
    ref: str = Field(description="a branch name, tag:NAME, or a full ref")
    commit_sha: str | None = None


class LogOut(BaseModel):
    build_id: uuid.UUID
    status: str
    final: bool
    text: str
    next: int = Field(description="pass as ?after= to read what follows")


class WebhookOut(BaseModel):
    message: str
    builds: list[uuid.UUID]
    duplicate: bool


def webhook_url(settings: Settings, name: str) -> str:
    return f"{settings.public_url}/api/v1/repositories/{name}/builds/webhook"


def source_out(settings: Settings, name: str, source: BuildSource, secret: str | None) -> SourceOut:
    return SourceOut(
        repository=name,
        url=source.url,
        rules=[
            RuleIn(
                ref_kind=r.ref_kind,
                pattern=r.pattern,
                docker_tag=r.docker_tag,
                dockerfile=r.dockerfile,
                context=r.context,
                build_args=dict(r.build_args or {}),
            )
            for r in source.rules
        ],
        has_deploy_key=source.deploy_key_sealed is not None,
        deploy_public_key=source.deploy_public_key,
        known_hosts=source.known_hosts,
        known_hosts_pinned=source.known_hosts_pinned,
        host_key_fingerprints=ssh.fingerprints(source.known_hosts or ""),
        schedule_minutes=source.schedule_minutes,
        next_scheduled_at=source.next_scheduled_at,
        timeout_seconds=source.timeout_seconds,
        webhook_url=webhook_url(settings, name),
        webhook_secret=secret,
    )


def build_out(build: Build) -> BuildOut:
    return BuildOut(**service.build_out(build))


async def _raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]


@router.get("/repositories/{namespace}/{repo}/build-source", response_model=SourceOut)
def get_source(
    namespace: str, repo: str, account: CurrentAccount, session: DbSession, settings: SettingsDep
) -> SourceOut:
    """The repository's Git source and build rules (for those who may push to it)."""
    name = service.repository_name(namespace, repo)
    service.require_pusher(session, account, name)
    source = service.get_source(session, name)
    if source is None:
        raise NotFound(f"{name} has no build source")
    return source_out(settings, name, source, None)


@router.put("/repositories/{namespace}/{repo}/build-source", response_model=SourceOut)
def put_source(
    namespace: str,
    repo: str,
    body: SourceIn,
    account: CurrentAccount,
    session: DbSession,
    settings: SettingsDep,
) -> SourceOut:
    """Link the repository to a Git source with its build rules (the repository is made if
    it does not exist yet). The webhook secret is in the answer when it is new."""
    name = service.repository_name(namespace, repo)
    source, secret = service.configure(
        session,
        settings,
        actor=account,
        name=name,
        url=body.url,
        rules=[service.RuleSpec(**r.model_dump()) for r in body.rules],
        deploy_key=body.deploy_key,
        clear_deploy_key=body.clear_deploy_key,
        generate_deploy_key=body.generate_deploy_key,
        known_hosts=body.known_hosts,
        clear_known_hosts=body.clear_known_hosts,
        schedule_minutes=body.schedule_minutes,
        timeout_seconds=body.timeout_seconds,
        rotate_secret=body.rotate_webhook_secret,
    )
    return source_out(settings, name, source, secret)


@router.delete("/repositories/{namespace}/{repo}/build-source", status_code=204)
def delete_source(namespace: str, repo: str, account: CurrentAccount, session: DbSession) -> None:
    """Unlink the Git source (the builds made so far stay)."""
    service.remove_source(session, actor=account, name=service.repository_name(namespace, repo))


@router.get("/repositories/{namespace}/{repo}/builds", response_model=list[BuildOut])
def list_builds(
    namespace: str,
    repo: str,
    caller: Caller,
    session: DbSession,
    limit: int = Query(default=50, ge=1, le=200),
) -> list[BuildOut]:
    """The latest builds, newest first (for those who may pull the repository)."""
    name = service.repository_name(namespace, repo)
    service.require_reader(session, caller.account, name)
    return [build_out(b) for b in service.list_builds(session, name=name, limit=limit)]


@router.post("/repositories/{namespace}/{repo}/builds", response_model=BuildOut, status_code=201)
def trigger(
    namespace: str, repo: str, body: TriggerIn, account: CurrentAccount, session: DbSession
) -> BuildOut:
    """Start a build of a branch (or ``tag:NAME``): its latest commit, or the one given."""
    name = service.repository_name(namespace, repo)
    build = service.trigger_manual(
        session, actor=account, name=name, ref=body.ref, commit_sha=body.commit_sha
    )
    return build_out(build)


@router.post("/repositories/{namespace}/{repo}/builds/webhook", response_model=WebhookOut)
def webhook(
    namespace: str,
    repo: str,
    request: Request,
    body: RawBody,
    session: DbSession,
    settings: SettingsDep,
) -> WebhookOut:
    """A push delivery from GitHub (``X-Hub-Signature-256``), GitLab (``X-Gitlab-Token``) or
    any sender of the generic form (``X-Store-Signature``); 401 when the signature does not
    check out. A delivery id seen before builds nothing."""
    name = service.repository_name(namespace, repo)
    outcome = service.receive_webhook(
        session, settings, name=name, headers=dict(request.headers), body=body
    )
    return WebhookOut(
        message=outcome.message, builds=[b.id for b in outcome.builds], duplicate=outcome.duplicate
    )


@router.get("/repositories/{namespace}/{repo}/builds/{build_id}", response_model=BuildOut)
def get_build(
    namespace: str, repo: str, build_id: uuid.UUID, caller: Caller, session: DbSession
) -> BuildOut:
    name = service.repository_name(namespace, repo)
    service.require_reader(session, caller.account, name)
    return build_out(service.get_build(session, name=name, build_id=build_id))


@router.get("/repositories/{namespace}/{repo}/builds/{build_id}/log", response_model=LogOut)
def get_log(
    namespace: str,
    repo: str,
    build_id: uuid.UUID,
    caller: Caller,
    session: DbSession,
    after: int = Query(default=-1, ge=-1),
) -> LogOut:
    """The build's log from a chunk on: poll with the ``next`` of the previous answer until
    ``final``."""
    return LogOut(**log_piece(session, caller.account, namespace, repo, build_id, after))


def log_piece(
    session: Any, account: Any, namespace: str, repo: str, build_id: uuid.UUID, after: int
) -> dict[str, Any]:
    name = service.repository_name(namespace, repo)
    service.require_reader(session, account, name)
    build = service.get_build(session, name=name, build_id=build_id)
    final = build.final  # read before the log, so nothing written after is missed
    piece = service.read_log(session, build.id, after=after)
    return {
        "build_id": build.id,
        "status": build.status,
        "final": final,
        "text": piece.text,
        "next": piece.next_seq,
    }


@router.post("/repositories/{namespace}/{repo}/builds/{build_id}/cancel", response_model=BuildOut)
def cancel(
    namespace: str, repo: str, build_id: uuid.UUID, account: CurrentAccount, session: DbSession
) -> BuildOut:
    name = service.repository_name(namespace, repo)
    service.require_pusher(session, account, name)
    service.get_build(session, name=name, build_id=build_id)
    return build_out(service.cancel(session, actor=account, build_id=build_id))
