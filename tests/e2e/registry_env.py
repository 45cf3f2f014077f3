"""Real processes for the registry end-to-end tests: the store under uvicorn, Debian's
docker-registry and skopeo, all on 127.0.0.1 with free ports, stopped by PID."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REGISTRY_BIN = shutil.which("docker-registry")
SKOPEO_BIN = shutil.which("skopeo")
MISSING = [
    name for name, path in (("docker-registry", REGISTRY_BIN), ("skopeo", SKOPEO_BIN)) if not path
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
    env.update(extra)
    return env


def wait_http(
    url: str, *, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start(name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, logs: Path) -> Process:
    log_path = logs / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    return Process(name, proc, log_path)


# --- OCI layouts ------------------------------------------------------------------------


def _blob(root: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}", len(data)


def build_oci_layout(root: Path, *, tag: str, files: dict[str, bytes]) -> str:
    """An OCI image layout with one gzip layer holding ``files``; returns the manifest digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    layer_digest, layer_size = _blob(root, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"],
        },
    }
    config_digest, config_size = _blob(root, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = _blob(root, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return manifest_digest


def read_oci_file(root: Path, path: str) -> bytes:
    """The content of ``path`` in the first layer of the layout's first image."""
    index = json.loads((root / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((root / "blobs" / "sha256" / manifest_digest).read_bytes())
    layer_digest = manifest["layers"][0]["digest"].split(":", 1)[1]
    layer = gzip.decompress((root / "blobs" / "sha256" / layer_digest).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        member = tar.extractfile(path)
        assert member is not None
        return member.read()


# --- skopeo -----------------------------------------------------------------------------


@dataclass
class Skopeo:
    registry: str  # host:port
    home: Path
    calls: list[list[str]] = field(default_factory=list)

    def run(
        self, *args: str, authfile: Path | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        authfile = authfile or self.home / "auth-empty.json"
        if not authfile.exists():
            authfile.write_text('{"auths": {}}')
        argv = [str(SKOPEO_BIN), "--insecure-policy", *args]
        if args[0] == "copy":
            argv[3:3] = ["--src-authfile", str(authfile), "--dest-authfile", str(authfile)]
        else:
            argv[3:3] = ["--authfile", str(authfile)]
        self.calls.append(argv)
        env = clean_env({"HOME": str(self.home), "REGISTRY_AUTH_FILE": str(authfile)})
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )

    def push(
        self, layout: Path, tag: str, repo: str, creds: str
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            f"oci:{layout}:{tag}",
            f"docker://{self.registry}/{repo}:{tag}",
        )

    def pull(
        self,
        repo: str,
        tag: str,
        dest: Path,
        creds: str | None = None,
        authfile: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        creds_args = ["--src-creds", creds] if creds else []
        return self.run(
            "copy",
            "--src-tls-verify=false",
            *creds_args,
            f"docker://{self.registry}/{repo}:{tag}",
            f"oci:{dest}:{tag}",
            authfile=authfile,
        )


def python_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "store.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@contextmanager
def running_stack(
    root: Path, store_env: dict[str, str], *, store_port: int, registry: str
) -> Iterator[list[Process]]:
    """Write the registry's config with `store registry config`, start the store (uvicorn) and
    docker-registry on their loopback ports, and stop both on exit. Yields [store, registry]."""
    written = python_cli(
        "registry", "config", "--registry-url", f"http://{registry}",
        "--out", str(root / "registry"), "--json", env=store_env,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    logs = root / "logs"
    logs.mkdir()
    processes: list[Process] = []
    try:
        store = start(
            "store",
            [
                "python", "-m", "uvicorn", "store.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(store_port), "--log-level", "warning",
            ],
            env=store_env,
            cwd=root,
            logs=logs,
        )  # fmt: skip
        processes.append(store)
        # start-up imports the whole app: slow on a loaded machine
        wait_http(f"http://127.0.0.1:{store_port}/token", proc=store.proc, timeout=90.0)
        reg = start(
            "registry",
            ["docker-registry", "serve", str(root / "registry" / "config.yml")],
            env=clean_env({}),
            cwd=root / "registry",
            logs=logs,
        )
        processes.append(reg)
        wait_http(f"http://{registry}/v2/", proc=reg.proc)
        yield processes
    finally:
        for process in reversed(processes):
            process.stop()
