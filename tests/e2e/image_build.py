"""Building and running the store's image without a container engine (docs/deploy.md, "The
image, built and run here").

- A Debian bookworm base image: ``mmdebstrap`` makes a root file system with Debian's
  Python 3.11 from this machine's apt sources; it is cached as a tar in ``.cache/image``
  (git-ignored; ``STORE_IMAGE_CACHE`` moves it), keyed by the command and the apt sources.
- A wheelhouse of the locked dependencies, made on the host by pip from constraints.txt
  (and the build backend): the build inside reads only it (no index, no network). Cached
  beside the base, keyed by the lock.
- ``buildah`` with the vfs driver in a storage of its own (a temporary directory removed
  afterwards, in memory when /dev/shm has room): the base is imported, the Dockerfile built as it is (``--format docker``
  keeps its HEALTHCHECK), and ``buildah run --isolation chroot`` runs commands of the image
  on the host's network.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
BUILDAH = shutil.which("buildah")
MMDEBSTRAP = shutil.which("mmdebstrap")
MISSING = [name for name, path in (("buildah", BUILDAH), ("mmdebstrap", MMDEBSTRAP)) if not path]

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_IMAGE = f"localhost/store-test/debian-python:{SUITE}"
IMAGE = "localhost/store-test/store:e2e"
# Where the build's RUN steps see the wheelhouse and the pip configuration that points at it.
WHEELHOUSE_MOUNT = "/wheelhouse"


def cache_dir() -> Path:
    path = Path(os.environ.get("STORE_IMAGE_CACHE") or ROOT / ".cache" / "image")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One maker of a cache entry at a time (another test run may be making it)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _drop_other_entries(directory: Path, prefix: str, keep: Path) -> None:
    """Older versions of an entry (another key) go when a new one is made."""
    for entry in directory.glob(f"{prefix}*"):
        if entry != keep and not entry.name.endswith(".lock"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _check(argv: Sequence[str], *, timeout: float, **kwargs: Any) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {result.returncode}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def _apt_sources() -> str:
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    return "\n".join(f.read_text(errors="replace") for f in files if f.is_file())


def debian_base_tar() -> Path:
    """The bookworm root file system with Debian's python3 (cached)."""
    assert MMDEBSTRAP
    options = ["--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "--format=tar"]
    cache = cache_dir()
    path = cache / f"debian-{SUITE}-{_key(options, SUITE, _apt_sources())}.tar"
    with _locked(cache / "debian.lock"):
        if not path.exists():
            partial = path.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _check([MMDEBSTRAP, "--quiet", *options, SUITE, str(partial)], timeout=1200)
            partial.rename(path)
            _drop_other_entries(cache, f"debian-{SUITE}-", path)
    return path


def requirements() -> list[str]:
    """The store's runtime dependencies and its build backend, as pyproject.toml names them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]


def wheelhouse() -> Path:
    """Wheels of the locked versions of everything the build installs (cached)."""
    constraints = (ROOT / "constraints.txt").read_text()
    cache = cache_dir()
    path = cache / f"wheels-{_key(constraints, requirements(), sys.version_info[:2])}"
    with _locked(cache / "wheels.lock"):
        if not (path / "complete").exists():
            partial = path.with_name(path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            _check(
                [
                    sys.executable, "-m", "pip", "wheel", "--quiet",
                    "--constraint", str(ROOT / "constraints.txt"),
                    "--wheel-dir", str(partial), *requirements(),
                ],
                timeout=1200,
            )  # fmt: skip
            (partial / "complete").write_text("")
            shutil.rmtree(path, ignore_errors=True)
            partial.rename(path)
            _drop_other_entries(cache, "wheels-", path)
    return path


@dataclass
class Buildah:
    """buildah on a storage of its own (vfs, no overlay mounts)."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        assert BUILDAH
        return [
            BUILDAH,
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        return {**os.environ, "TMPDIR": str(tmp), "BUILDAH_ISOLATION": "chroot"}

    def __call__(self, *args: str, timeout: float = 120) -> str:
        return _check(self.argv(*args), timeout=timeout, env=self.env).strip()

    def run(
        self,
        container: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        volumes: Sequence[str] = (),
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """A command in the container (its image's user, working directory and ENV)."""
        return subprocess.run(
            self.run_argv(container, argv, env=env, volumes=volumes),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def run_argv(
        self,
        container: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        volumes: Sequence[str] = (),
    ) -> list[str]:
        options = ["--isolation", "chroot"]
        for key, value in env.items():
            options += ["--env", f"{key}={value}"]
        for volume in volumes:
            options += ["--volume", volume]
        return self.argv("run", *options, container, "--", *argv)

    def start(
        self,
        container: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        log: IO[bytes],
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.run_argv(container, argv, env=env),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@dataclass
class BuiltImage:
    buildah: Buildah
    name: str
    config: dict[str, Any]  # Docker image config: User, Env, Cmd, Healthcheck, …
    size_mb: float  # all layers, uncompressed (buildah's figure, 1 MB = 10**6 bytes)
    base_size_mb: float


_UNITS = {"B": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}


def _size_mb(buildah: Buildah, image: str) -> float:
    listed = json.loads(buildah("images", "--json", image))
    number, unit = str(listed[0]["size"]).split()
    return float(number) * _UNITS[unit]


# The storage peaks at about 1 GB in some 50,000 files (vfs copies whole root file systems).
STORAGE_ROOM = 4 * 10**9


def storage_parent() -> str | None:
    """Where the temporary storage goes: memory (/dev/shm) when it has room and allows
    executables there, which makes copying and removing those files cheap; else the
    default temporary directory. ``STORE_IMAGE_TMPDIR`` chooses."""
    chosen = os.environ.get("STORE_IMAGE_TMPDIR")
    if chosen:
        return chosen
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:
        return None
    if shm.f_bavail * shm.f_frsize >= STORAGE_ROOM and not shm.f_flag & os.ST_NOEXEC:
        return "/dev/shm"
    return None


STORAGE_PREFIX = "store-image-"
IN_USE = "in-use.lock"


def _remove_abandoned_storages(parent: Path) -> None:
    """Storages of runs that ended without cleaning up (killed): nobody holds their lock.
    In /dev/shm they would keep their gigabyte of memory until the next boot."""
    for storage in parent.glob(f"{STORAGE_PREFIX}*"):
        try:
            handle = open(storage / IN_USE)  # noqa: SIM115
        except OSError:
            continue  # being made (no lock file yet) or not ours
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another run is using it
            shutil.rmtree(storage, ignore_errors=True)


@contextmanager
def built_image() -> Iterator[BuiltImage]:
    """The Dockerfile built on the Debian base, in a temporary storage removed afterwards."""
    base_tar, wheels = debian_base_tar(), wheelhouse()
    parent = storage_parent()
    _remove_abandoned_storages(Path(parent or tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix=STORAGE_PREFIX, dir=parent))
    # Locked for the whole build and run; named only once locked, so a sweep of another run
    # never sees it unlocked.
    in_use = open(root / (IN_USE + ".new"), "w")  # noqa: SIM115
    fcntl.flock(in_use, fcntl.LOCK_EX)
    os.rename(root / (IN_USE + ".new"), root / IN_USE)
    buildah = Buildah(root)
    try:
        container = buildah("from", "scratch")
        buildah("add", "--quiet", container, str(base_tar), "/", timeout=600)
        buildah("commit", "--quiet", "--rm", container, BASE_IMAGE, timeout=600)
        pip_conf = root / "pip.conf"
        pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {WHEELHOUSE_MOUNT}\n")
        buildah(
            "bud",
            "--isolation", "chroot",
            "--format", "docker",
            "--pull=never",
            "--build-arg", f"BASE={BASE_IMAGE}",
            "--volume", f"{wheels}:{WHEELHOUSE_MOUNT}:ro",
            "--volume", f"{pip_conf}:/etc/pip.conf:ro",
            "--tag", IMAGE,
            str(ROOT),
            timeout=1800,
        )  # fmt: skip
        inspected = json.loads(buildah("inspect", "--type", "image", IMAGE))
        yield BuiltImage(
            buildah,
            IMAGE,
            inspected["Docker"]["config"],
            _size_mb(buildah, IMAGE),
            _size_mb(buildah, BASE_IMAGE),
        )
    finally:
        # vfs keeps plain directories (nothing mounted): the storage goes with its directory.
        shutil.rmtree(root)
        in_use.close()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …": comm may hold spaces and parentheses.
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(text.split(" ", 1)[0]))
    found, queue = [], [pid]
    while queue:
        for child in sorted(children.get(queue.pop(0), [])):
            found.append(child)
            queue.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def parent(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text.rsplit(")", 1)[1].split()[1])
