"""Automated builds: the Git source and rules of a repository, and the builds they queue.

Who may configure and trigger a repository's builds is whoever may push to it: the one rule
of :mod:`store.registry.grants`. Whoever may not even pull it is told it does not exist.

Builds are queued by a signature-verified push webhook, by hand (page, API, CLI) or on a
schedule, and run by ``store builds worker`` processes (:mod:`store.builds.queue`,
:mod:`store.builds.worker`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.audit import service as audit
from store.config import Settings
from store.db import lock_row, utcnow
from store.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from store.idempotency import ProcessedEvent
from store.keys import crypto
from store.registry import grants, hub
from store.registry.models import HubRepository
from store.registry.scopes import valid_repository

from . import ssh
from .models import REF_KINDS, Build, BuildLogChunk, BuildRule, BuildSource

MAX_RULES = 20
MAX_BUILD_ARGS = 50
WEBHOOK_TOLERANCE = timedelta(minutes=5)  # the generic form's timestamp
ZERO_SHA = "0" * 40
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?/\[\]!-]{1,255}$")
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")
_REF_NAME = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


# --- secrets at rest ---------------------------------------------------------------------


def _key(settings: Settings) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"store-build-secrets", info=b"aes-256-gcm v1"
    ).derive(settings.resolved_secret_key.encode())


def seal(settings: Settings, value: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key(settings)).encrypt(nonce, value.encode(), b"store-build-secret")
    return "v1:" + crypto.b64url(nonce + sealed)


def unseal(settings: Settings, envelope: str) -> str:
    version, _, body = envelope.partition(":")
    if version != "v1":
        raise ValueError(f"unknown envelope version {version!r}")
    raw = crypto.b64url_decode(body)
    return AESGCM(_key(settings)).decrypt(raw[:12], raw[12:], b"store-build-secret").decode()


# --- who may ------------------------------------------------------------------------------


def _principal(account: Account) -> grants.Principal:
    return grants.Principal(
        kind="account",
        subject=account.username,
        account_id=account.id,
        is_admin=account.is_admin,
    )


def repository_actions(session: Session, account: Account | None, name: str) -> set[str]:
    """What the rule lets ``account`` do on the repository (anonymous for None)."""
    principal = _principal(account) if account is not None else grants.ANONYMOUS
    facts = grants.load_facts(session.connection(), principal, [name], utcnow())[name]
    return grants.allowed_repository_actions(principal, facts)


def repository_name(namespace: str, repo: str) -> str:
    name = f"{namespace}/{repo}".strip().lower()
    if not valid_repository(name) or name.count("/") != 1:
        raise ValidationFailed(
            f"'{namespace}/{repo}' is not a repository name (NAMESPACE/NAME)",
            code="bad_repository",
        )
    return name


def require_pusher(session: Session, account: Account | None, name: str) -> None:
    """Builds of a repository are for whoever may push to it; whoever may not even pull it
    learns nothing about it."""
    actions = repository_actions(session, account, name)
    if "pull" not in actions and "push" not in actions:
        raise NotFound(f"No repository {name}")
    if "push" not in actions:
        raise Forbidden(
            f"Only those who may push to {name} configure and start its builds",
            code="push_required",
        )


def require_reader(session: Session, account: Account | None, name: str) -> None:
    """Build history and logs: for whoever may pull the repository."""
    if "pull" not in repository_actions(session, account, name):
        raise NotFound(f"No repository {name}")


# --- validation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    ref_kind: str
    pattern: str
    docker_tag: str
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: dict[str, str] | None = None


def validate_url(settings: Settings, url: str) -> str:
    """A Git URL the store may clone: https, ssh (``ssh://`` or ``user@host:path``), and on
    a development machine a local path or ``file://``."""
    url = url.strip()
    if not url or len(url) > 1000:
        raise ValidationFailed(
            "A Git source URL is required (at most 1000 characters)",
            code="bad_source_url",
            field="url",
        )
    if url.startswith("-") or any(ord(c) < 33 for c in url):
        raise ValidationFailed(f"'{url}' is not a Git URL", code="bad_source_url", field="url")
    parts = urlsplit(url)
    if _option_like(url, parts):
        # ssh would read "-oProxyCommand=…" as an option, not a host (CVE-2017-1000117):
        # refused here whatever git version the worker runs.
        raise ValidationFailed(
            f"'{url}' has a user, host or port that starts with '-'",
            code="bad_source_url",
            field="url",
        )
    if parts.scheme in ("https", "ssh"):
        if not parts.hostname or not parts.path.strip("/"):
            raise ValidationFailed(
                f"'{url}' names no host and repository", code="bad_source_url", field="url"
            )
        if parts.scheme == "https" and "@" in parts.netloc:
            # A user name too: GitHub and others take an access token as the user name, and
            # whoever may pull the repository reads its builds' logs, not its settings.
            raise ValidationFailed(
                "Put no credentials in an https URL: use an ssh URL with a deploy key",
                code="bad_source_url",
                field="url",
            )
        return url
    if not parts.scheme and _SCP_LIKE.match(url):
        return url
    if parts.scheme == "file" or (not parts.scheme and url.startswith("/")):
        if not settings.local_build_sources:
            raise ValidationFailed(
                "Local Git sources (a path or file://) are for development only",
                code="bad_source_url",
                field="url",
            )
        return url
    raise ValidationFailed(
        f"'{url}' is not a Git URL the store clones (https://, ssh://, user@host:path"
        + (", a local path or file://" if settings.local_build_sources else "")
        + ")",
        code="bad_source_url",
        field="url",
    )


def _option_like(url: str, parts: SplitResult) -> bool:
    """Whether the URL's user, host or port (``ssh://user@host:port/…``, ``user@host:path``)
    starts with '-'."""
    authority = parts.netloc if parts.scheme else url.split(":", 1)[0]
    user, _, host_port = authority.rpartition("@")
    host, _, port = (
        host_port.partition(":") if not host_port.startswith("[") else (host_port, "", "")
    )
    return any(part.startswith("-") for part in (user, host, port))


def shown_url(url: str) -> str:
    """The source URL as a build's log shows it: an https URL without its user part (a
    token, in a source saved before such URLs were refused)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _relative(value: str, what: str) -> str:
    value = (value or "").strip() or ("." if what == "context" else "Dockerfile")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or len(value) > 500 or "\\" in value:
        raise ValidationFailed(
            f"The {what} '{value}' must be a path inside the repository (no '..', not absolute)",
            code="bad_rule",
            field="rules",
        )
    if any(ord(c) < 32 for c in value):
        raise ValidationFailed(
            f"The {what} '{value}' has control characters", code="bad_rule", field="rules"
        )
    return str(path)


def render_tag(template: str, ref_name: str, sha: str | None) -> str:
    """The Docker tag of a rule for a ref: ``{ref}`` is the branch or tag name (``/`` as
    ``-``), ``{sha}`` the short commit (left for the worker when the commit is not known
    yet); ``latest``-style literals stay as they are."""
    ref = re.sub(r"[^A-Za-z0-9_.-]", "-", ref_name).lstrip(".-") or "ref"
    tag = template.replace("{ref}", ref)
    return tag.replace("{sha}", sha[:12])[:128] if sha else tag


def validate_rule(spec: RuleSpec) -> RuleSpec:
    if spec.ref_kind not in REF_KINDS:
        raise ValidationFailed(
            f"A rule is for a 'branch' or a 'tag', not '{spec.ref_kind}'",
            code="bad_rule",
            field="rules",
        )
    pattern = spec.pattern.strip()
    if not _PATTERN.match(pattern):
        raise ValidationFailed(
            f"'{pattern}' is not a {spec.ref_kind} pattern (letters, digits, . _ - / and * ? [ ])",
            code="bad_rule",
            field="rules",
        )
    template = spec.docker_tag.strip()
    sample = render_tag(template, "release-1.0", "0" * 40)
    if not template or not _TAG.match(sample) or re.search(r"\{(?!ref\}|sha\})", template):
        raise ValidationFailed(
            f"'{template}' is not a Docker tag (letters, digits, _ . -, with {{ref}} or {{sha}})",
            code="bad_rule",
            field="rules",
        )
    args = dict(spec.build_args or {})
    if len(args) > MAX_BUILD_ARGS:
        raise ValidationFailed(
            f"At most {MAX_BUILD_ARGS} build arguments", code="bad_rule", field="rules"
        )
    for key, value in args.items():
        if not isinstance(key, str) or not _ARG_NAME.match(key):
            raise ValidationFailed(
                f"'{key}' is not a build argument name", code="bad_rule", field="rules"
            )
        if not isinstance(value, str) or len(value) > 4000 or "\0" in value:
            raise ValidationFailed(
                f"The build argument {key} must be text of at most 4000 characters",
                code="bad_rule",
                field="rules",
            )
    return RuleSpec(
        ref_kind=spec.ref_kind,
        pattern=pattern,
        docker_tag=template,
        dockerfile=_relative(spec.dockerfile, "Dockerfile path"),
        context=_relative(spec.context, "context"),
        build_args=args,
    )


# --- configuration ------------------------------------------------------------------------


def get_source(session: Session, name: str) -> BuildSource | None:
    return session.scalar(select(BuildSource).join(HubRepository).where(HubRepository.name == name))


def configure(
    session: Session,
    settings: Settings,
    *,
    actor: Account,
    name: str,
    url: str,
    rules: list[RuleSpec],
    deploy_key: str | None = None,
    clear_deploy_key: bool = False,
    generate_deploy_key: bool = False,
    known_hosts: str | None = None,
    clear_known_hosts: bool = False,
    schedule_minutes: int | None = None,
    timeout_seconds: int | None = None,
    rotate_secret: bool = False,
) -> tuple[BuildSource, str | None]:
    """Link the repository (made in the hub if new) to a Git source with its rules. Returns
    the source and the webhook secret when it was made or rotated (None otherwise).

    ssh sources: ``generate_deploy_key`` makes a new key pair (its public half is shown, to
    be added to the Git server), ``deploy_key`` takes a pasted private key instead;
    ``known_hosts`` pins the server's host keys, ``clear_known_hosts`` forgets them (the
    next fetch records the server's key again). A new ssh server forgets keys recorded on
    first use of the old one; pinned keys stay until changed."""
    require_pusher(session, actor, name)
    url = validate_url(settings, url)
    if not rules:
        raise ValidationFailed("At least one build rule is needed", code="bad_rule", field="rules")
    if len(rules) > MAX_RULES:
        raise ValidationFailed(f"At most {MAX_RULES} build rules", code="bad_rule", field="rules")
    checked = [validate_rule(r) for r in rules]
    if schedule_minutes is not None and not 5 <= schedule_minutes <= 60 * 24 * 31:
        raise ValidationFailed(
            "A schedule is every 5 minutes to every 31 days (in minutes)",
            code="bad_schedule",
            field="schedule_minutes",
        )
    timeout = timeout_seconds or settings.build_timeout
    if not 30 <= timeout <= 86400:
        raise ValidationFailed(
            "A build timeout is 30 s to 24 h", code="bad_timeout", field="timeout_seconds"
        )
    if generate_deploy_key and deploy_key:
        raise ValidationFailed(
            "Paste a deploy key or have one made, not both",
            code="bad_deploy_key",
            field=("deploy_key", "generate_deploy_key"),
        )
    comment = f"store-build@{name}"
    key = ssh.parse_private(deploy_key, comment) if deploy_key else None
    if generate_deploy_key:
        key = ssh.generate(comment)
    pinned = ssh.parse_known_hosts(known_hosts) if known_hosts and known_hosts.strip() else None
    repo = hub.ensure_repository(session, name)
    source = get_source(session, name)
    new_secret: str | None = None
    now = utcnow()
    if source is None:
        new_secret = secrets.token_urlsafe(32)
        source = BuildSource(
            repository_id=repo.id,
            url=url,
            webhook_secret_sealed=seal(settings, new_secret),
            created_at=now,
        )
        session.add(source)
    elif rotate_secret:
        new_secret = secrets.token_urlsafe(32)
        source.webhook_secret_sealed = seal(settings, new_secret)
    if ssh.host(source.url) != ssh.host(url) and not source.known_hosts_pinned:
        source.known_hosts = None
    source.url = url
    if key is not None:
        source.deploy_key_sealed = seal(settings, key[0])
        source.deploy_public_key = key[1]
    elif clear_deploy_key:
        source.deploy_key_sealed = None
        source.deploy_public_key = None
    if pinned is not None:
        source.known_hosts, source.known_hosts_pinned = pinned, True
    elif clear_known_hosts:
        source.known_hosts, source.known_hosts_pinned = None, False
    if source.schedule_minutes != schedule_minutes or source.next_scheduled_at is None:
        source.next_scheduled_at = (
            now + timedelta(minutes=schedule_minutes) if schedule_minutes else None
        )
    source.schedule_minutes = schedule_minutes
    source.timeout_seconds = timeout
    source.configured_by_id = actor.id
    source.updated_at = now
    source.rules.clear()
    session.flush()
    for position, spec in enumerate(checked):
        source.rules.append(
            BuildRule(
                position=position,
                ref_kind=spec.ref_kind,
                pattern=spec.pattern,
                docker_tag=spec.docker_tag,
                dockerfile=spec.dockerfile,
                context=spec.context,
                build_args=spec.build_args or {},
            )
        )
    session.flush()
    audit.record(
        session,
        action="builds.configure",
        actor=actor,
        target_type="repository",
        target_id=name,
        details={
            "repository": name,
            "url": url,
            "rules": len(checked),
            "schedule_minutes": schedule_minutes,
            "deploy_key": source.deploy_key_sealed is not None,
            "deploy_key_changed": key is not None or clear_deploy_key,
            "known_hosts_pinned": source.known_hosts_pinned,
            "secret_rotated": rotate_secret,
        },
    )
    return source, new_secret


def remove_source(session: Session, *, actor: Account, name: str) -> None:
    require_pusher(session, actor, name)
    source = get_source(session, name)
    if source is None:
        raise NotFound(f"{name} has no build source")
    session.delete(source)
    audit.record(
        session,
        action="builds.remove",
        actor=actor,
        target_type="repository",
        target_id=name,
        details={"repository": name},
    )


def webhook_secret(settings: Settings, source: BuildSource) -> str:
    return unseal(settings, source.webhook_secret_sealed)


def deploy_key(settings: Settings, source: BuildSource) -> str | None:
    return unseal(settings, source.deploy_key_sealed) if source.deploy_key_sealed else None


# --- queueing -----------------------------------------------------------------------------


def split_ref(ref: str) -> tuple[str, str]:
    """``refs/heads/main`` → ("branch", "main"); ``refs/tags/v1`` → ("tag", "v1")."""
    if ref.startswith("refs/heads/"):
        return "branch", ref.removeprefix("refs/heads/")
    if ref.startswith("refs/tags/"):
        return "tag", ref.removeprefix("refs/tags/")
    raise ValidationFailed(f"'{ref}' is not a branch or tag ref", code="bad_ref", field="ref")


def matching_rule(source: BuildSource, ref: str) -> BuildRule | None:
    kind, name = split_ref(ref)
    for rule in source.rules:
        if rule.ref_kind == kind and fnmatch.fnmatchcase(name, rule.pattern):
            return rule
    return None


def _queue(
    session: Session,
    source: BuildSource,
    rule: BuildRule,
    *,
    ref: str,
    sha: str | None,
    trigger: str,
    triggered_by: str,
) -> Build:
    repo = session.get(HubRepository, source.repository_id)
    assert repo is not None
    _, ref_name = split_ref(ref)
    build = Build(
        repository_id=repo.id,
        repository=repo.name,
        namespace=repo.namespace,
        source_url=source.url,
        ref=ref,
        commit_sha=sha,
        # Without a commit, {sha} is rendered by the worker once it knows the commit.
        docker_tag=render_tag(rule.docker_tag, ref_name, sha),
        dockerfile=rule.dockerfile,
        context=rule.context,
        build_args=dict(rule.build_args or {}),
        trigger=trigger,
        triggered_by=triggered_by[:128],
        status="queued",
        timeout_seconds=source.timeout_seconds,
        cancel_requested=False,
        queued_at=utcnow(),
        worker="",
        error="",
        log_size=0,
    )
    session.add(build)
    session.flush()
    return build


def normalise_ref(value: str) -> str:
    """A branch name, a tag name (``tag:v1``) or a full ref."""
    value = value.strip()
    if value.startswith("refs/"):
        ref = value
    elif value.startswith("tag:"):
        ref = "refs/tags/" + value.removeprefix("tag:")
    else:
        ref = "refs/heads/" + value
    if not _REF_NAME.match(ref) or ".." in ref or ref.endswith("/"):
        raise ValidationFailed(
            f"'{value}' is not a branch or tag name", code="bad_ref", field="ref"
        )
    return ref


def trigger_manual(
    session: Session,
    *,
    actor: Account,
    name: str,
    ref: str,
    commit_sha: str | None = None,
) -> Build:
    """Queue a build of a branch (or ``tag:NAME``) by hand; its latest commit unless a
    commit is given."""
    require_pusher(session, actor, name)
    source = get_source(session, name)
    if source is None:
        raise NotFound(f"{name} has no build source: link a Git repository first")
    full = normalise_ref(ref)
    rule = matching_rule(source, full)
    if rule is None:
        raise ValidationFailed(f"No build rule matches {full}", code="no_rule", field="ref")
    sha = commit_sha.strip().lower() if commit_sha else None
    if sha is not None and not _SHA.match(sha):
        raise ValidationFailed(
            f"'{commit_sha}' is not a full commit SHA", code="bad_commit", field="commit_sha"
        )
    build = _queue(
        session, source, rule, ref=full, sha=sha, trigger="manual", triggered_by=actor.username
    )
    audit.record(
        session,
        action="builds.trigger",
        actor=actor,
        target=build,
        details={"repository": name, "ref": full, "commit": sha},
    )
    return build


def cancel(session: Session, *, actor: Account, build_id: uuid.UUID) -> Build:
    """A queued build is canceled at once; a running one when its worker next looks (within
    a second or two): its process is stopped and nothing is pushed."""
    build = lock_row(session, Build, build_id, populate=False)
    if build is None:
        raise NotFound("No such build")
    require_pusher(session, actor, build.repository)
    if build.final:
        raise Conflict(f"The build already {build.status}", code="build_finished")
    if build.status == "queued":
        build.status = "canceled"
        build.finished_at = utcnow()
        build.error = f"canceled by {actor.username}"
    else:
        build.cancel_requested = True
    audit.record(
        session,
        action="builds.cancel",
        actor=actor,
        target=build,
        details={"repository": build.repository},
    )
    session.flush()
    return build


def queue_scheduled(session: Session, *, now: datetime | None = None) -> list[Build]:
    """Queue the builds of every source whose schedule is due: each branch rule naming one
    branch (no wildcard) builds that branch's latest commit. One process does each (the
    sources are taken ``FOR UPDATE SKIP LOCKED``; SQLite's write lock on SQLite)."""
    now = now or utcnow()
    sources = session.scalars(
        select(BuildSource)
        .where(BuildSource.next_scheduled_at <= now, BuildSource.schedule_minutes.is_not(None))
        .limit(50)
        .with_for_update(skip_locked=True)
    ).all()
    queued: list[Build] = []
    for source in sources:
        assert source.schedule_minutes is not None
        source.next_scheduled_at = now + timedelta(minutes=source.schedule_minutes)
        for rule in source.rules:
            if rule.ref_kind != "branch" or any(c in rule.pattern for c in "*?["):
                continue
            queued.append(
                _queue(
                    session,
                    source,
                    rule,
                    ref=f"refs/heads/{rule.pattern}",
                    sha=None,
                    trigger="schedule",
                    triggered_by="schedule",
                )
            )
    session.flush()
    return queued


# --- webhooks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookOutcome:
    builds: list[Build]
    message: str
    duplicate: bool = False


def _header(headers: dict[str, str], name: str) -> str:
    return headers.get(name.lower(), "")


def verify_webhook(
    secret: str, headers: dict[str, str], body: bytes, *, now: datetime
) -> tuple[str, str]:
    """Which sender signed the delivery and its delivery id; Unauthorized when no form of
    signature checks out. Forms: GitHub (``X-Hub-Signature-256: sha256=HMAC(body)``,
    ``X-GitHub-Delivery``), GitLab (``X-Gitlab-Token`` equal to the secret,
    ``X-Gitlab-Event-UUID``), and the generic form (``X-Store-Signature:
    sha256=HMAC("<timestamp>.<delivery>." + body)``, ``X-Store-Timestamp`` within 5
    minutes, ``X-Store-Delivery``)."""
    key = secret.encode()
    github = _header(headers, "X-Hub-Signature-256")
    gitlab = _header(headers, "X-Gitlab-Token")
    generic = _header(headers, "X-Store-Signature")
    if github:
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, github.strip()):
            raise Unauthorized("The webhook signature does not match", code="bad_signature")
        return "github", _header(headers, "X-GitHub-Delivery")
    if gitlab:
        if not hmac.compare_digest(secret.encode(), gitlab.strip().encode()):
            raise Unauthorized("The webhook token does not match", code="bad_signature")
        delivery = _header(headers, "X-Gitlab-Event-UUID") or _header(
            headers, "X-Gitlab-Webhook-UUID"
        )
        return "gitlab", delivery
    if generic:
        stamp = _header(headers, "X-Store-Timestamp")
        delivery = _header(headers, "X-Store-Delivery")
        try:
            moment = datetime.fromtimestamp(int(stamp), now.tzinfo)
        except (ValueError, OverflowError, OSError):
            raise Unauthorized(
                "X-Store-Timestamp is not a Unix time", code="bad_signature"
            ) from None
        if abs(now - moment) > WEBHOOK_TOLERANCE:
            raise Unauthorized("The webhook timestamp is too old or too new", code="bad_signature")
        message = f"{stamp}.{delivery}.".encode() + body
        expected = "sha256=" + hmac.new(key, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, generic.strip()):
            raise Unauthorized("The webhook signature does not match", code="bad_signature")
        return "generic", delivery
    raise Unauthorized(
        "The webhook is not signed (X-Hub-Signature-256, X-Gitlab-Token or X-Store-Signature)",
        code="bad_signature",
    )


def sign_generic(secret: str, body: bytes, *, delivery: str, timestamp: int) -> dict[str, str]:
    """The headers of a generic webhook delivery (for scripts and tests)."""
    message = f"{timestamp}.{delivery}.".encode() + body
    signature = "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {
        "X-Store-Signature": signature,
        "X-Store-Timestamp": str(timestamp),
        "X-Store-Delivery": delivery,
    }


_NOBODYS_SECRET = secrets.token_urlsafe(32)


def receive_webhook(
    session: Session, settings: Settings, *, name: str, headers: dict[str, str], body: bytes
) -> WebhookOutcome:
    """A push delivery: verified against the repository's secret, acted on once per delivery
    id, then the push's branch or tag is matched against the rules."""
    headers = {k.lower(): v for k, v in headers.items()}
    source = get_source(session, name)
    if source is None:
        # Checked against a secret nobody has, so the refusal is word for word the one a
        # repository with builds gives (unsigned, stale, wrong): nothing says whether the
        # repository, or its build settings, exist.
        verify_webhook(_NOBODYS_SECRET, headers, body, now=utcnow())
        raise Unauthorized("The webhook signature does not match", code="bad_signature")
    sender, delivery = verify_webhook(webhook_secret(settings, source), headers, body, now=utcnow())
    if not delivery or len(delivery) > 200:
        raise ValidationFailed("The delivery has no delivery id", code="no_delivery_id")
    if sender == "github" and _header(headers, "X-GitHub-Event") == "ping":
        return WebhookOutcome([], "pong")
    event_id = f"{source.id.hex}:{delivery}"
    try:
        with session.begin_nested():
            session.add(ProcessedEvent(source="build-hook", event_id=event_id, event_type=sender))
    except IntegrityError:
        return WebhookOutcome([], "delivery already received", duplicate=True)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationFailed("The webhook body is not JSON", code="bad_payload") from None
    if not isinstance(payload, dict):
        raise ValidationFailed("The webhook body is not a push event", code="bad_payload")
    ref = payload.get("ref")
    sha = payload.get("checkout_sha") or payload.get("after")
    if not isinstance(ref, str) or not isinstance(sha, str):
        return WebhookOutcome([], "not a push event: nothing to build")
    sha = sha.lower()
    if sha == ZERO_SHA or payload.get("deleted") is True:
        return WebhookOutcome([], f"{ref} was deleted: nothing to build")
    if not _SHA.match(sha):
        raise ValidationFailed(f"'{sha}' is not a commit SHA", code="bad_payload")
    try:
        rule = matching_rule(source, ref)
    except ValidationFailed:
        return WebhookOutcome([], f"{ref} is neither a branch nor a tag: nothing to build")
    if rule is None:
        return WebhookOutcome([], f"no build rule matches {ref}")
    _, ref_name = split_ref(ref)
    tag = render_tag(rule.docker_tag, ref_name, sha)
    pending = session.scalar(
        select(func.count())
        .select_from(Build)
        .where(
            Build.repository_id == source.repository_id,
            Build.commit_sha == sha,
            Build.docker_tag == tag,
            Build.status.in_(("queued", "running")),
        )
    )
    if pending:
        return WebhookOutcome([], f"{sha[:12]} is already being built into {tag}")
    build = _queue(session, source, rule, ref=ref, sha=sha, trigger="webhook", triggered_by=sender)
    return WebhookOutcome([build], f"queued build {build.id}")


# --- reading ------------------------------------------------------------------------------


def list_builds(session: Session, *, name: str, limit: int = 50) -> list[Build]:
    return list(
        session.scalars(
            select(Build)
            .join(HubRepository, HubRepository.id == Build.repository_id)
            .where(HubRepository.name == name)
            .order_by(Build.queued_at.desc())
            .limit(limit)
        )
    )


def get_build(session: Session, *, name: str, build_id: uuid.UUID) -> Build:
    build = session.get(Build, build_id)
    if build is None or build.repository != name:
        raise NotFound("No such build")
    return build


@dataclass(frozen=True)
class LogPiece:
    text: str
    next_seq: int


def read_log(
    session: Session, build_id: uuid.UUID, *, after: int = -1, limit: int = 500
) -> LogPiece:
    """The log from chunk ``after + 1`` on (at most ``limit`` chunks)."""
    chunks = list(
        session.execute(
            select(BuildLogChunk.seq, BuildLogChunk.text)
            .where(BuildLogChunk.build_id == build_id, BuildLogChunk.seq > after)
            .order_by(BuildLogChunk.seq)
            .limit(limit)
        )
    )
    if not chunks:
        return LogPiece("", after)
    return LogPiece("".join(text for _, text in chunks), chunks[-1][0])


def build_out(build: Build) -> dict[str, Any]:
    return {
        "id": build.id,
        "repository": build.repository,
        "status": build.status,
        "trigger": build.trigger,
        "triggered_by": build.triggered_by,
        "ref": build.ref,
        "commit_sha": build.commit_sha,
        "docker_tag": build.docker_tag,
        "dockerfile": build.dockerfile,
        "context": build.context,
        "digest": build.digest,
        "error": build.error,
        "queued_at": build.queued_at,
        "started_at": build.started_at,
        "finished_at": build.finished_at,
        "cancel_requested": build.cancel_requested,
    }
