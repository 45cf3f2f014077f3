"""The build queue in the database: claims, the log as it is written, outcomes.

* A claim is a transaction of its own that moves one queued build to ``running`` under a
  random claim token. On PostgreSQL candidates are read ``FOR UPDATE SKIP LOCKED`` (two
  workers never take the same build and neither waits for the other) and the namespace's
  limit of running builds is counted under a transaction-scoped advisory lock on the
  namespace, so two workers cannot both take its last slot. On SQLite the claim runs in a
  writing transaction (``BEGIN IMMEDIATE``: the database's one write lock), so claims are
  exclusive there. The update itself is conditional on ``status = 'queued'``: a claim is
  never taken twice.
* Everything a worker writes afterwards (log chunks, heartbeat, outcome) is conditional on
  its claim token. A worker that stops leaves a running build whose heartbeat gets old: the
  next claim marks it failed ("the worker stopped").
* Short-lived registry credentials (:func:`credential`): username ``_store-build``, a
  password that names the build and its deadline under an HMAC of the store secret. The
  token endpoint accepts it while the build is running (``store.registry.credentials``),
  and the rule (``store.registry.grants``) lets it pull and push on that one repository.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.db import read_only_session, session_scope, utcnow

from . import ssh
from .models import Build, BuildLogChunk, BuildSource

HEARTBEAT_LAPSE = timedelta(minutes=2)  # a running build without a sign of life this long
CANDIDATES = 20
LOG_CAP = 5 * 1024 * 1024  # characters kept per build
BUILD_USERNAME = "_store-build"


@dataclass
class Claimed:
    build_id: uuid.UUID
    token: str
    repository: str
    namespace: str
    source_url: str
    ref: str
    commit_sha: str | None
    docker_tag: str
    dockerfile: str
    context: str
    build_args: dict[str, str]
    timeout_seconds: int
    deploy_key_sealed: str | None
    known_hosts: str | None
    configured_by_id: uuid.UUID | None
    started_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)


def _sweep(session: Session, now: datetime) -> None:
    """Running builds whose worker stopped (no heartbeat for a while) fail."""
    session.execute(
        update(Build)
        .where(Build.status == "running", Build.heartbeat_at < now - HEARTBEAT_LAPSE)
        .values(
            status="failed",
            finished_at=now,
            claim_token=None,
            error="the worker running the build stopped (no sign of life for 2 minutes)",
        )
    )


def claim(factory: sessionmaker[Session], settings: Settings, *, worker: str) -> Claimed | None:
    """Claim the oldest queued build whose namespace has a free slot, in a writing
    transaction of its own."""
    now = utcnow()
    with session_scope(factory) as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        _sweep(session, now)
        candidates = session.scalars(
            select(Build)
            .where(Build.status == "queued")
            .order_by(Build.queued_at, Build.id)
            .limit(CANDIDATES)
            .with_for_update(skip_locked=True)
        ).all()
        full: set[str] = set()
        for build in candidates:
            if build.namespace in full:
                continue
            if postgres and not session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"),
                {"key": f"store-builds:{build.namespace}"},
            ):
                full.add(build.namespace)  # another worker is claiming in it right now
                continue
            running = session.scalar(
                select(func.count())
                .select_from(Build)
                .where(Build.namespace == build.namespace, Build.status == "running")
            )
            if (running or 0) >= settings.builds_per_namespace:
                full.add(build.namespace)
                continue
            token = secrets.token_hex(16)
            taken = session.execute(
                update(Build)
                .where(Build.id == build.id, Build.status == "queued")
                .values(
                    status="running",
                    claim_token=token,
                    worker=worker[:128],
                    started_at=now,
                    heartbeat_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                continue
            source = session.scalar(
                select(BuildSource).where(BuildSource.repository_id == build.repository_id)
            )
            return Claimed(
                build_id=build.id,
                token=token,
                repository=build.repository,
                namespace=build.namespace,
                source_url=build.source_url,
                ref=build.ref,
                commit_sha=build.commit_sha,
                docker_tag=build.docker_tag,
                dockerfile=build.dockerfile,
                context=build.context,
                build_args=dict(build.build_args or {}),
                timeout_seconds=build.timeout_seconds,
                deploy_key_sealed=source.deploy_key_sealed if source else None,
                # host keys are for the source's server: a build queued before the source
                # moved to another server fetches from the old one, trusting it on first use
                known_hosts=(
                    source.known_hosts
                    if source and ssh.host(source.url) == ssh.host(build.source_url)
                    else None
                ),
                configured_by_id=source.configured_by_id if source else None,
                started_at=now,
            )
    return None


def record_known_hosts(factory: sessionmaker[Session], claimed: Claimed, known_hosts: str) -> bool:
    """Keep the host keys a first ssh fetch accepted, unless the source has keys by now (the
    owner pinned some, or another build recorded them first). Whether they were kept."""
    built = select(Build.repository_id).where(Build.id == claimed.build_id).scalar_subquery()
    with session_scope(factory) as session:
        done = session.execute(
            update(BuildSource)
            .where(
                BuildSource.repository_id == built,
                BuildSource.url == claimed.source_url,
                BuildSource.known_hosts.is_(None),
            )
            .values(known_hosts=known_hosts)
            .execution_options(synchronize_session=False)
        )
        return done.rowcount == 1  # type: ignore[attr-defined]


def work_exists(factory: sessionmaker[Session]) -> bool:
    """Whether a build is queued, a running build's worker stopped, or a schedule is due:
    a read that never waits for writers, so idle workers take no write lock."""
    now = utcnow()
    with read_only_session(factory) as session, session.begin():
        found = select(Build.id).where(
            (Build.status == "queued")
            | ((Build.status == "running") & (Build.heartbeat_at < now - HEARTBEAT_LAPSE))
        )
        due = select(BuildSource.id).where(BuildSource.next_scheduled_at <= now)
        return bool(session.scalar(select(found.exists() | due.exists())))


@dataclass
class LogWriter:
    """Appends a claimed build's log in chunks; each flush is also its heartbeat and tells
    whether the build was canceled or its claim lost."""

    factory: sessionmaker[Session]
    claimed: Claimed
    seq: int = 0
    size: int = 0
    truncated: bool = False
    canceled: bool = False
    lost: bool = False
    _buffer: list[str] = field(default_factory=list)
    _last: float = field(default_factory=time.monotonic)

    def write(self, line: str) -> None:
        if self.size >= LOG_CAP:
            if not self.truncated:
                self.truncated = True
                self._buffer.append("\n[log truncated: more than 5 MB]\n")
            return
        self._buffer.append(line)
        self.size += len(line)

    def due(self, interval: float = 0.5) -> bool:
        return time.monotonic() - self._last >= interval

    def flush(self) -> None:
        """Write what is buffered (a heartbeat when nothing is) and read the build's state."""
        chunk = "".join(self._buffer)
        self._buffer.clear()
        self._last = time.monotonic()
        c = self.claimed
        with session_scope(self.factory) as session:
            row = session.execute(
                update(Build)
                .where(Build.id == c.build_id, Build.claim_token == c.token)
                .values(heartbeat_at=utcnow(), log_size=self.size)
                .returning(Build.cancel_requested)
            ).first()
            if row is None:
                self.lost = True
                return
            self.canceled = bool(row[0])
            if chunk:
                session.add(BuildLogChunk(build_id=c.build_id, seq=self.seq, text=chunk))
                self.seq += 1


def set_commit(factory: sessionmaker[Session], claimed: Claimed, sha: str, tag: str) -> None:
    with session_scope(factory) as session:
        session.execute(
            update(Build)
            .where(Build.id == claimed.build_id, Build.claim_token == claimed.token)
            .values(commit_sha=sha, docker_tag=tag)
        )
    claimed.commit_sha, claimed.docker_tag = sha, tag


def finish(
    factory: sessionmaker[Session],
    claimed: Claimed,
    *,
    status: str,
    error: str = "",
    digest: str | None = None,
) -> bool:
    """Record the outcome against the claim; False if the claim was lost meanwhile."""
    with session_scope(factory) as session:
        result = session.execute(
            update(Build)
            .where(Build.id == claimed.build_id, Build.claim_token == claimed.token)
            .values(
                status=status,
                error=error[:4000],
                digest=digest,
                finished_at=utcnow(),
                claim_token=None,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


# --- the build's registry credential ------------------------------------------------------


def _mac(settings: Settings, build_id: str, expires: int) -> str:
    message = f"registry-build-credential\0{build_id}\0{expires}".encode()
    return hmac.new(settings.resolved_secret_key.encode(), message, hashlib.sha256).hexdigest()


def credential(settings: Settings, build_id: uuid.UUID, *, expires: int) -> tuple[str, str]:
    """Username and password the build pushes with (valid until ``expires``, Unix time,
    and only while the build is running)."""
    return BUILD_USERNAME, f"{build_id.hex}.{expires}.{_mac(settings, build_id.hex, expires)}"


class BuildCredential(NamedTuple):
    """What a valid build credential names: its build and its end (Unix time)."""

    build_id: uuid.UUID
    expires: int


def check_credential(settings: Settings, password: str, *, now: float) -> BuildCredential | None:
    """The build a password names and its deadline, if its MAC is right and it has not
    expired."""
    parts = password.split(".")
    if len(parts) != 3:
        return None
    build_hex, expires_text, mac = parts
    try:
        build_id = uuid.UUID(hex=build_hex)
        expires = int(expires_text)
    except ValueError:
        return None
    if not hmac.compare_digest(_mac(settings, build_id.hex, expires), mac):
        return None
    if expires < now:
        return None
    return BuildCredential(build_id, expires)
