"""``store builds worker``: claims queued builds and runs them, one at a time per process.

A build, in its own workspace (``<builds dir>/work/<build id>``, removed afterwards):

1. the account that configured the source must still be allowed to push to the repository
   (the rule of :mod:`store.registry.grants`), else the build fails before anything runs;
2. ``git`` fetches the exact commit (a branch's latest commit when none was given; an ssh
   source uses its deploy key and only the host keys pinned or recorded for the source, the
   first fetch recording the server's key: :mod:`store.builds.ssh`);
3. ``buildah bud --isolation chroot`` with the vfs storage driver in a storage of the
   build's own (removed afterwards) builds the Dockerfile; multi-stage builds and ``RUN``
   steps work as root without a container engine;
4. only when the build succeeded, ``buildah push`` sends the image to the registry with a
   credential valid for this build and repository only (written to an auth file in the
   workspace, never on a command line), and the pushed manifest digest is recorded with
   the commit.

Every line of output goes to the build's log as it comes (flushed twice a second, which is
also the heartbeat). Cancel and the timeout stop the running step's whole process group.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue as queue_module
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.db import read_only_session, session_scope
from store.registry import repositories

from . import queue, service, ssh
from .models import Build

log = logging.getLogger("store.builds")


class BuildFailed(Exception):
    """A step failed; the message is what the log and the build's error say."""

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class SshFailed(BuildFailed):
    """The ssh connection to the Git server failed: retrying another way will not help."""


class BuildStopped(Exception):
    """Canceled, timed out, or the claim was lost: stop at once."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Tools:
    git: str
    buildah: str

    @classmethod
    def find(cls) -> Tools:
        git, buildah = shutil.which("git"), shutil.which("buildah")
        missing = [n for n, p in (("git", git), ("buildah", buildah)) if not p]
        if missing:
            raise RuntimeError(f"builds need {' and '.join(missing)} installed")
        assert git and buildah
        return cls(git=git, buildah=buildah)


def registry_host(settings: Settings) -> str:
    parts = urlsplit(settings.registry_url)
    return parts.netloc


class Run:
    """One claimed build being run."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        claimed: queue.Claimed,
        tools: Tools,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.claimed = claimed
        self.tools = tools
        self.log = queue.LogWriter(factory, claimed)
        self.deadline = time.monotonic() + claimed.timeout_seconds
        root = settings.resolved_builds_dir
        self.workspace = root / "work" / claimed.build_id.hex
        self.storage = root / "storage" / claimed.build_id.hex
        self.image = f"localhost/store-build/{claimed.build_id.hex}:latest"

    # --- the log -------------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.log.write(line if line.endswith("\n") else line + "\n")
        self.check()

    def check(self) -> None:
        if self.log.due():
            self.log.flush()
        if self.log.lost:
            raise BuildStopped("lost", "the build's claim was lost")
        if self.log.canceled:
            raise BuildStopped("canceled", "canceled while running")
        if time.monotonic() > self.deadline:
            minutes = self.claimed.timeout_seconds / 60
            raise BuildStopped("failed", f"timed out after {minutes:g} minutes")

    # --- steps ---------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        what: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        show: str | None = None,
    ) -> str:
        """Run one command, its output streamed into the log; its output (last 64 kB)."""
        self.say(f"$ {show or shlex.join(argv)}")
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        lines: queue_module.Queue[bytes | None] = queue_module.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                lines.put(raw)
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        tail: list[str] = []
        try:
            while True:
                try:
                    raw = lines.get(timeout=0.25)
                except queue_module.Empty:
                    self.check()
                    continue
                if raw is None:
                    break
                line = raw.decode("utf-8", "replace")
                tail.append(line)
                if len(tail) > 400:
                    del tail[:200]
                self.log.write(line)
                self.check()
            code = proc.wait()
        except BaseException:
            _kill(proc)
            raise
        finally:
            reader.join(timeout=5)
            if not reader.is_alive() and proc.stdout is not None:
                proc.stdout.close()
        if code != 0:
            raise BuildFailed(f"{what} failed (exit status {code})", output="".join(tail))
        return "".join(tail)[-65536:]

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.workspace),
            "LANG": "C.UTF-8",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "BUILDAH_ISOLATION": "chroot",
        }
        return env

    def permitted(self) -> None:
        """The account that configured the source must still be allowed to push."""
        c = self.claimed
        with read_only_session(self.factory) as session, session.begin():
            allowed, who = repositories.account_may_push(session, c.configured_by_id, c.repository)
        if not allowed:
            raise BuildFailed(
                f"{who}, who configured these builds, may no longer push to {c.repository}: "
                "someone who may push must save the build settings again"
            )

    @property
    def _known_hosts_file(self) -> Path:
        return self.workspace / "known_hosts"

    def _ssh(self, env: dict[str, str]) -> None:
        """How git runs ssh: no configuration files, no agent, only the source's deploy key,
        and only its pinned or recorded host keys (the server's key is accepted and then
        recorded when there are none yet)."""
        c = self.claimed
        known = self._known_hosts_file
        argv = ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
        argv += ["-o", "IdentityAgent=none"]
        argv += ["-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null"]
        argv += ["-o", "HashKnownHosts=no", "-o", "ConnectTimeout=30"]
        if c.known_hosts:
            known.write_text(c.known_hosts)
            argv += ["-o", "StrictHostKeyChecking=yes"]
        else:
            argv += ["-o", "StrictHostKeyChecking=accept-new"]
        if c.deploy_key_sealed:
            key = self.workspace / "deploy_key"
            key.touch(mode=0o600)
            key.write_text(service.unseal(self.settings, c.deploy_key_sealed))
            argv += ["-i", str(key)]
        else:  # not the worker account's own keys
            argv += ["-o", "IdentityFile=none"]
        env["GIT_SSH_COMMAND"] = shlex.join(argv)

    def remote(self, argv: Sequence[str], *, what: str, env: dict[str, str]) -> str:
        """A git command that talks to the source; an ssh failure says what to do about it."""
        try:
            return self.run(argv, what=what, env=env)
        except BuildFailed as exc:
            server = ssh.host(self.claimed.source_url)
            if server is None:
                raise
            reason = _ssh_reason(
                exc.output, server, self.claimed.known_hosts, bool(self.claimed.deploy_key_sealed)
            )
            if reason is None:
                raise
            raise SshFailed(reason, output=exc.output) from None

    def _record_host_keys(self) -> None:
        c = self.claimed
        server = ssh.host(c.source_url)
        known = self._known_hosts_file
        if c.known_hosts or server is None or not known.exists():
            return
        text = known.read_text()
        if not ssh.fingerprints(text):
            return
        if queue.record_known_hosts(self.factory, c, text):
            self.say(
                f"==> Trusted the ssh host key of {server} on first use "
                f"({', '.join(ssh.fingerprints(text))}): later builds require the same key"
            )

    def fetch(self, env: dict[str, str]) -> None:
        c = self.claimed
        git = self.tools.git
        src = self.workspace / "src"
        self._ssh(env)
        url = c.source_url
        if url.startswith("/"):
            url = "file://" + url
        shown = service.shown_url(c.source_url)
        self.say(f"==> Fetching {c.ref} from {shown}")
        self.run([git, "init", "-q", str(src)], what="git init", env=env)
        remote = [git, "-C", str(src), "remote", "add", "origin", "--"]
        self.run(
            [*remote, url],
            what="git remote",
            env=env,
            show=shlex.join([*remote, service.shown_url(url)]),
        )
        sha = c.commit_sha
        if sha is None:
            out = self.remote(
                [git, "-C", str(src), "ls-remote", "origin", "--", c.ref],
                what="git ls-remote",
                env=env,
            )
            found = [ln.split()[0] for ln in out.splitlines() if ln.endswith("\t" + c.ref)]
            if not found:
                raise BuildFailed(f"{c.ref} does not exist in {shown}")
            sha = found[0].lower()
            _, ref_name = service.split_ref(c.ref)
            template = c.docker_tag
            queue.set_commit(self.factory, c, sha, service.render_tag(template, ref_name, sha))
        try:
            self.remote(
                [git, "-C", str(src), "fetch", "-q", "--depth", "1", "origin", sha],
                what="git fetch",
                env=env,
            )
        except SshFailed:
            raise
        except BuildFailed:
            # A server that does not serve commits by id: fetch the ref and find it there.
            self.say("(the server does not fetch by commit; fetching the ref)")
            self.remote(
                [git, "-C", str(src), "fetch", "-q", "origin", c.ref], what="git fetch", env=env
            )
        self._record_host_keys()
        self.run(
            [
                git,
                "-C",
                str(src),
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "-q",
                "--detach",
                sha,
            ],
            what="git checkout",
            env=env,
        )
        head = (
            self.run([git, "-C", str(src), "rev-parse", "HEAD"], what="git rev-parse", env=env)
            .strip()
            .splitlines()[-1]
        )
        if head != sha:
            raise BuildFailed(f"checked out {head}, not the commit {sha}")
        self.say(f"==> At commit {sha}")

    def _inside(self, relative: str, what: str) -> Path:
        src = (self.workspace / "src").resolve()
        path = (src / relative).resolve()
        if path != src and src not in path.parents:
            raise BuildFailed(f"the {what} {relative} leads outside the repository")
        if not path.exists():
            raise BuildFailed(f"the {what} {relative} does not exist at this commit")
        return path

    def _buildah(self) -> list[str]:
        return [
            self.tools.buildah,
            "--root",
            str(self.storage / "root"),
            "--runroot",
            str(self.storage / "run"),
            "--storage-driver",
            "vfs",
        ]

    def build(self, env: dict[str, str]) -> None:
        c = self.claimed
        context = self._inside(c.context, "context")
        dockerfile = self._inside(c.dockerfile, "Dockerfile")
        argv = [
            *self._buildah(),
            "bud",
            "--isolation",
            "chroot",
            "--layers=false",
            "-f",
            str(dockerfile),
            "-t",
            self.image,
        ]
        for key, value in sorted(c.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(str(context))
        self.say(f"==> Building {c.dockerfile} (context {c.context})")
        self.run(argv, what="the build", env=env, cwd=context)

    def push(self, env: dict[str, str]) -> str:
        c = self.claimed
        target = f"{registry_host(self.settings)}/{c.repository}:{c.docker_tag}"
        username, password = queue.credential(
            self.settings,
            c.build_id,
            expires=int(time.time()) + max(300, int(self.deadline - time.monotonic()) + 60),
        )
        authfile = self.workspace / "auth.json"
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
        authfile.write_text(
            json.dumps({"auths": {registry_host(self.settings): {"auth": encoded}}})
        )
        authfile.chmod(0o600)
        digestfile = self.workspace / "digest"
        insecure = self.settings.registry_url.startswith("http://")
        argv = [
            *self._buildah(),
            "push",
            "--authfile",
            str(authfile),
            f"--tls-verify={'false' if insecure else 'true'}",
            "--digestfile",
            str(digestfile),
            self.image,
            f"docker://{target}",
        ]
        self.say(f"==> Pushing {target}")
        self.run(argv, what="the push", env=env)
        digest = digestfile.read_text().strip()
        if not digest.startswith("sha256:"):
            raise BuildFailed("the push reported no digest")
        self.say(f"==> Pushed {target} ({digest}) from commit {c.commit_sha}")
        return digest

    def timed(self, step: str, began: float) -> None:
        """One line a step: ``==> fetch took 0.41 s`` (build times, read by bench/builds.py)."""
        self.say(f"==> {step} took {time.monotonic() - began:.2f} s")

    def execute(self) -> str:
        """Run the build to its end; its final status."""
        c = self.claimed
        status, error, digest = "failed", "", None
        try:
            self.workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.storage.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.say(f"==> Build {c.build_id} of {c.repository}:{c.docker_tag} ({c.ref})")
            self.permitted()
            env = self._env()
            for step, action in (("fetch", self.fetch), ("build", self.build)):
                began = time.monotonic()
                action(env)
                self.timed(step, began)
            began = time.monotonic()
            digest = self.push(env)
            self.timed("push", began)
            status = "succeeded"
        except BuildFailed as exc:
            error = str(exc)
            self.log.write(f"Build failed: {error}. Nothing was pushed.\n")
        except BuildStopped as exc:
            status, error = ("failed" if exc.status == "lost" else exc.status), exc.message
            self.log.write(f"Build {status}: {error}. Nothing was pushed.\n")
        except Exception as exc:
            log.exception("build %s failed", c.build_id)
            error = f"{type(exc).__name__}: {exc}"
            self.log.write(f"Build failed: {error}\n")
        finally:
            self._clean()
        self.log.write(f"==> {status}\n")
        try:
            self.log.flush()
        finally:
            queue.finish(self.factory, c, status=status, error=error, digest=digest)
        return status

    def _clean(self) -> None:
        for path in (self.storage, self.workspace):
            shutil.rmtree(path, ignore_errors=True)


def _ssh_reason(output: str, server: str, known_hosts: str | None, has_key: bool) -> str | None:
    """What an ssh failure means for the owner, from ssh's own words; None when it is not
    one ssh explains."""
    if "Host key verification failed" in output or "HOST IDENTIFICATION HAS CHANGED" in output:
        keys = ", ".join(ssh.fingerprints(known_hosts or "")) or "none"
        return (
            f"the ssh host key of {server} is not the one the build settings trust ({keys}): "
            "if the server's key really changed, pin its new key or clear the recorded one "
            "in the build settings"
        )
    if "Permission denied (publickey" in output and not has_key:
        return (
            f"the ssh server {server} refused the connection: the build source has no deploy "
            "key (make one in the build settings and add its public half to the Git repository)"
        )
    if "Permission denied (publickey" in output:
        return (
            f"the ssh server {server} refused the deploy key: add the deploy key's public half "
            "(shown in the build settings) to the Git repository, or set another key"
        )
    for sign in ("Connection refused", "Could not resolve hostname", "timed out", "No route"):
        if sign in output:
            return f"could not reach the ssh server {server} ({sign.lower()})"
    return None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Worker:
    """Claims and runs builds until none is left (``run_once``) or until stopped."""

    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, *, name: str | None = None
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.tools = Tools.find()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"

    def sweep_workspaces(self) -> int:
        """Remove the workspaces and storages that builds no longer running left behind (a
        worker killed in the middle of one); those of running builds stay."""
        root = self.settings.resolved_builds_dir
        entries = [
            entry
            for part in ("work", "storage")
            if (root / part).is_dir()
            for entry in (root / part).iterdir()
        ]
        if not entries:
            return 0
        with read_only_session(self.factory) as session, session.begin():
            running = {
                b.hex for b in session.scalars(select(Build.id).where(Build.status == "running"))
            }
        removed = 0
        for entry in entries:
            if entry.name not in running:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    def schedule(self) -> int:
        with session_scope(self.factory) as session:
            return len(service.queue_scheduled(session))

    def run_one(self) -> str | None:
        claimed = queue.claim(self.factory, self.settings, worker=self.name)
        if claimed is None:
            return None
        log.info("build %s of %s started", claimed.build_id, claimed.repository)
        status = Run(self.factory, self.settings, claimed, self.tools).execute()
        log.info("build %s of %s %s", claimed.build_id, claimed.repository, status)
        return status

    def run_once(self) -> dict[str, int]:
        self.sweep_workspaces()
        counts = {"succeeded": 0, "failed": 0, "canceled": 0}
        self.schedule()
        while (status := self.run_one()) is not None:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def run_forever(self, stop: threading.Event) -> None:
        if removed := self.sweep_workspaces():
            log.info("removed %d workspaces left behind by stopped builds", removed)
        log.info("build worker %s waiting for builds", self.name)
        while not stop.is_set():
            try:
                if queue.work_exists(self.factory):
                    self.schedule()
                    if self.run_one() is not None:
                        continue
            except Exception:
                log.exception("build worker round failed")
            stop.wait(self.settings.builds_poll_interval)
