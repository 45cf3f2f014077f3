"""Automated builds end to end: webhook → worker → buildah → pushed, and a queue of builds.

    python bench/builds.py [--builds 10] [--workers 2] [--backend sqlite|postgresql]

Starts the store (uvicorn) and Debian's docker-registry on free 127.0.0.1 ports with a
fresh database, a local bare Git repository holding a trivial Dockerfile (``FROM scratch``,
Debian's static busybox, one ``RUN``), and ``store builds worker`` processes (each its own
process, as in production; buildah's vfs storage under /dev/shm). Needs root, git, buildah,
busybox-static, docker-registry and skopeo, like the end-to-end tests.

1. One build, one idle worker: from the signed push webhook to the pushed image, split into
   the queue wait (the worker's poll interval), fetch (git), buildah (build + push) and the
   rest.
2. ``--builds`` builds queued at once (one commit per branch, one webhook each) with
   ``--workers`` workers already running: median and p95 of the queue wait and of the build
   wall time (claim to recorded outcome).

"Store overhead" is everything but buildah's own time (``buildah bud`` and ``buildah
push``, as the worker logs them): the git fetch, the database writes of the claim, the log
and the outcome, process start-up of the steps. Printed as seconds and as a ratio to
buildah's time.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, sys.path[0] is bench/, whose modules (token.py...) would shadow the
# standard library: put the project root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
# ruff: noqa: E402

import argparse
import hashlib
import hmac
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.builds.models import Build
from store.builds.service import read_log
from store.db import make_engine, make_sessionmaker, session_scope
from tests import pg
from tests.e2e.registry_env import Process, clean_env, free_port, running_stack, start
from tests.factories import api_token, make_account, make_org

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "echo built > /built.txt"]
CMD ["/bin/busybox", "cat", "/built.txt"]
"""
TOOK = re.compile(r"^==> (fetch|build|push) took ([0-9.]+) s$", re.M)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


@dataclass
class Sample:
    queue_wait: float
    wall: float
    fetch: float
    buildah: float

    @property
    def overhead(self) -> float:
        return self.wall - self.buildah


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def seconds(later: datetime | None, earlier: datetime | None) -> float:
    assert later is not None and earlier is not None
    return (later - earlier).total_seconds()


class Bench:
    def __init__(
        self,
        root: Path,
        store_url: str,
        factory: sessionmaker[Session],
        store_env: dict[str, str],
        token: str,
    ) -> None:
        self.root = root
        self.store_url = store_url
        self.factory = factory
        self.store_env = store_env
        self.token = token
        self.secret = ""
        self.work = root / "work"
        self.bare = root / "app.git"

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.work), *args],
            capture_output=True,
            text=True,
            check=True,
            env=clean_env({"HOME": str(self.root), **GIT_ENV}),
        ).stdout.strip()

    def prepare(self) -> None:
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        subprocess.run(
            ["git", "clone", "-q", str(self.bare), str(self.work)], check=True, capture_output=True
        )
        shutil.copy("/bin/busybox", self.work / "busybox")
        (self.work / "Dockerfile").write_text(DOCKERFILE)
        answer = httpx.put(
            f"{self.store_url}/api/v1/repositories/acme/app/build-source",
            json={
                "url": str(self.bare),
                "rules": [{"ref_kind": "branch", "pattern": "*", "docker_tag": "{ref}"}],
            },
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        answer.raise_for_status()
        self.secret = answer.json()["webhook_secret"]

    def commit(self, branch: str) -> str:
        self.git("checkout", "-q", "-B", branch)
        (self.work / "revision.txt").write_text(f"{branch} {uuid.uuid4()}\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"change on {branch}")
        self.git("push", "-q", "origin", branch)
        return self.git("rev-parse", "HEAD")

    def webhook(self, branch: str, sha: str) -> str:
        body = json.dumps({"ref": f"refs/heads/{branch}", "after": sha}).encode()
        signature = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        answer = httpx.post(
            f"{self.store_url}/api/v1/repositories/acme/app/builds/webhook",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": f"sha256={signature}",
            },
            timeout=60,
        )
        answer.raise_for_status()
        return str(answer.json()["builds"][0])

    def workers(self, count: int, logs: Path) -> list[Process]:
        procs = [
            start(
                f"worker-{n}-{time.monotonic_ns()}",
                [sys.executable, "-m", "store.cli.main", "builds", "worker", "--name", f"w{n}"],
                env=self.store_env,
                cwd=self.root,
                logs=logs,
            )
            for n in range(count)
        ]
        deadline = time.monotonic() + 120
        while not all("waiting for builds" in p.log() for p in procs):
            if time.monotonic() > deadline or any(p.proc.poll() is not None for p in procs):
                raise RuntimeError("a worker did not start:\n" + "\n".join(p.log() for p in procs))
            time.sleep(0.1)
        time.sleep(0.5)  # past their first look at the queue: idle, polling
        return procs

    def wait(self, ids: list[str], timeout: float = 900) -> None:
        wanted = [uuid.UUID(i) for i in ids]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.factory() as session:
                rows = session.scalars(select(Build).where(Build.id.in_(wanted))).all()
                if all(b.final for b in rows) and len(rows) == len(wanted):
                    return
            time.sleep(0.05)
        raise TimeoutError("the builds did not finish")

    def sample(self, build_id: str) -> Sample:
        with self.factory() as session:
            build = session.get(Build, uuid.UUID(build_id))
            assert build is not None
            log = read_log(session, build.id, limit=100_000).text
            if build.status != "succeeded":
                raise RuntimeError(f"build {build.id} {build.status}: {build.error}\n{log}")
            took = {step: float(value) for step, value in TOOK.findall(log)}
            return Sample(
                queue_wait=seconds(build.started_at, build.queued_at),
                wall=seconds(build.finished_at, build.started_at),
                fetch=took["fetch"],
                buildah=took["build"] + took["push"],
            )


def line(label: str, values: list[float]) -> str:
    return f"  {label:<34} median {statistics.median(values):6.2f} s   p95 {p95(values):6.2f} s"


def run(args: argparse.Namespace, database_url: str | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-builds-"))
    shm = Path("/dev/shm")
    builds_dir = (shm if shm.is_dir() and os.access(shm, os.W_OK) else root) / root.name
    data_dir = root / "store-data"
    data_dir.mkdir()
    database_url = database_url or f"sqlite:///{data_dir / 'store.db'}"
    store_port, registry_port = free_port(), free_port()
    store_url = f"http://127.0.0.1:{store_port}"
    store_env = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_DATABASE_URL": database_url,
            "STORE_SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "STORE_PUBLIC_URL": store_url,
            "STORE_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
            "STORE_ENVIRONMENT": "test",
            "STORE_BUILDS_DIR": str(builds_dir),
        }
    )
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        alice = make_account(session, "alice")
        make_org(session, alice, "acme")
        token = api_token(session, alice)
    workers: list[Process] = []
    try:
        with running_stack(
            root, store_env, store_port=store_port, registry=f"127.0.0.1:{registry_port}"
        ):
            bench = Bench(root, store_url, factory, store_env, token)
            bench.prepare()
            logs = root / "logs"

            # 1. one build, one idle worker
            workers = bench.workers(1, logs)
            sha = bench.commit("main")
            sent = time.monotonic()
            single = bench.webhook("main", sha)
            bench.wait([single])
            total = time.monotonic() - sent
            for worker in workers:
                worker.stop()
            one = bench.sample(single)
            rest = total - one.queue_wait - one.fetch - one.buildah
            print("One trivial build, one idle worker (webhook → pushed):")
            print(
                f"  total {total:.2f} s = queue wait {one.queue_wait:.2f} s "
                f"(poll interval 2 s) + fetch {one.fetch:.2f} s + buildah "
                f"{one.buildah:.2f} s + rest {rest:.2f} s"
            )
            overhead = total - one.buildah
            print(
                f"  store overhead {overhead:.2f} s; overhead / buildah = "
                f"{overhead / one.buildah:.2f}"
            )

            # 2. a queue of builds, several workers
            workers = bench.workers(args.workers, logs)
            shas = [(f"b{n}", bench.commit(f"b{n}")) for n in range(args.builds)]
            ids = [bench.webhook(branch, sha) for branch, sha in shas]
            started = time.monotonic()
            bench.wait(ids)
            elapsed = time.monotonic() - started
            samples = [bench.sample(i) for i in ids]
            rate = args.builds / elapsed * 60
            print(
                f"\n{args.builds} builds queued at once, {args.workers} workers "
                f"({elapsed:.1f} s for all; {rate:.1f} builds/min):"
            )
            print(line("queue wait", [s.queue_wait for s in samples]))
            print(line("build wall time (claim → outcome)", [s.wall for s in samples]))
            print(line("  buildah (bud + push)", [s.buildah for s in samples]))
            print(line("  git fetch", [s.fetch for s in samples]))
            print(line("  store overhead (wall − buildah)", [s.overhead for s in samples]))
            ratio = statistics.median(s.overhead / s.buildah for s in samples)
            print(f"  store overhead / buildah, median: {ratio:.2f}")
    finally:
        for worker in workers:
            worker.stop()
        engine.dispose()
        shutil.rmtree(builds_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    missing = [n for n in ("git", "buildah", "docker-registry", "skopeo") if not shutil.which(n)]
    if missing or not Path("/bin/busybox").exists() or os.geteuid() != 0:
        print(f"needs root and {', '.join(missing) or 'busybox-static'}", file=sys.stderr)
        return 2
    if args.backend == "sqlite":
        run(args, None)
        return 0
    with pg.scratch_database("bench-builds") as url:
        run(args, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
