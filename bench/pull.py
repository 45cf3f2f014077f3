"""What the store's token auth adds to a pull: skopeo copies through it and without it.

    python bench/pull.py [--rounds 15] [--layers 3] [--layer-kib 512]

Loopback only. Starts the store (``store serve --workers 2``, SQLite, a fresh data
directory) with a publisher, a paid product and an entitled customer, Debian's
docker-registry configured by ``store registry config`` (token auth at the store), and a
second docker-registry serving the **same storage without auth** (and a third with token
auth but no notifications). Pushes one image of ``--layers`` layers (random bytes, so nothing
compresses away), then runs interleaved rounds (the three copies in an order that rotates
from round to round):

- ``auth``: ``skopeo copy docker://<registry with auth>/acme/app:1 oci:<fresh dir>`` with the
  customer's personal access token (challenge, token request, then the transfer);
- ``quiet``: the same copy from a third docker-registry on the same storage with token auth
  but without notifications (what the pull notification costs: auth - quiet);
- ``open``: the same copy from the registry without auth (the transfer alone);
- ``challenge``: ``GET /v2/`` on the registry with auth (the 401 that sends a client to the
  store);
- ``token``: ``GET /token`` for the pull at the store with the same credential.

Prints per case the median and p90 in ms, how many tokens the store granted per pull and the
store's mean time per pull notification of the counted rounds (from its metrics, after their
one-second delay; the push's notification and the warm-up round's apart), the store's own CPU
time per round and while each copy ran (all its processes' threads, from
``/proc/<pid>/task/*/schedstat``: the figure the machine's load stretches least),
the ratio auth / open (target ≤ 1.10) as the ratio of the medians and as the median of the
rounds' own ratios (robust to the load changing during the run), quiet / open, and the split
of a pull's extra time into challenge, token request and the rest (skopeo's requests again
with the bearer token, the registry's token checks, and its pull notification, which the
store records while the copy runs), with the load average before and after.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # the repository, for bench._common

import argparse
import base64
import glob
import gzip
import hashlib
import io
import json
import shutil
import signal
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    HOST,
    free_port,
    loadavg,
    percentile,
    seed_shop,
    store_env,
    wait_http,
)


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def image_layout(root: Path, *, tag: str, layers: int, layer_bytes: int) -> None:
    """An OCI image layout of ``layers`` gzip layers, each one file of random bytes."""
    descriptors, diff_ids = [], []
    for i in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"layer{i}/data.bin")
            info.size = layer_bytes
            info.mtime = 0
            tar.addfile(info, io.BytesIO(os.urandom(layer_bytes)))
        layer_tar = raw.getvalue()
        layer = {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            **_blob(root, gzip.compress(layer_tar, mtime=0)),
        }
        descriptors.append(layer)
        diff_ids.append(f"sha256:{hashlib.sha256(layer_tar).hexdigest()}")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(root, json.dumps(config).encode()),
        },
        "layers": descriptors,
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(root, json.dumps(manifest).encode()),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def skopeo(home: Path, *args: str) -> float:
    """Run skopeo; the seconds it took (SystemExit when it fails)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
    env["HOME"] = str(home)
    authfile = home / "auth.json"
    if not authfile.exists():
        authfile.write_text('{"auths": {}}')
    argv = ["skopeo", "--insecure-policy", *args[:1], "--authfile", str(authfile), *args[1:]]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"skopeo {' '.join(args[:1])} failed: {done.stderr[-2000:]}")
    return elapsed


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the store's server process and its workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in glob.glob(f"/proc/{current}/task/*/children"):
            try:
                todo += [int(c) for c in Path(children).read_text().split()]
            except OSError:
                continue
    return found


def cpu_ms(pids: list[int]) -> float:
    """CPU time the threads of these processes have run, in ms (``/proc/<pid>/task/*/
    schedstat``: nanoseconds, unlike the 10 ms ticks of ``/proc/<pid>/stat``; a thread that
    has exited is no longer counted, and the store's threads live as long as it does)."""
    total = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                total += int(Path(path).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--layer-kib", type=int, default=512)
    args = parser.parse_args()
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install {tool})")
    import httpx
    import yaml

    tmp = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    store_port, auth_port, open_port = free_port(), free_port(), free_port()
    quiet_port = free_port()
    env = store_env(tmp / "data", "bench-pull-secret-0123456789abcdef", store_port)
    env["STORE_REGISTRY_URL"] = f"http://{HOST}:{auth_port}"
    push, pull = seed_shop(env, key_purposes=("registry", "license"))
    subprocess.run(
        [sys.executable, "-m", "store.cli.main", "registry", "config",
         "--registry-url", f"http://{HOST}:{auth_port}", "--out", str(tmp / "registry")],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    config = yaml.safe_load((tmp / "registry" / "config.yml").read_text())
    config.pop("notifications", None)
    config.setdefault("http", {})["addr"] = f"{HOST}:{quiet_port}"
    (tmp / "registry" / "quiet.yml").write_text(yaml.safe_dump(config))  # auth, no events
    config.pop("auth", None)
    config["http"]["addr"] = f"{HOST}:{open_port}"
    (tmp / "registry" / "open.yml").write_text(yaml.safe_dump(config))
    processes: list[subprocess.Popen[bytes]] = []
    logs = tmp / "logs"
    logs.mkdir()

    def start(name: str, argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        store = start(
            "store",
            [sys.executable, "-m", "store.cli.main", "serve", "--port", str(store_port),
             "--workers", "2", "--log-level", "warning"],
            tmp,
        )  # fmt: skip
        wait_http(f"http://{HOST}:{store_port}/healthz", store)
        registry = tmp / "registry"
        auth_reg = start("registry", ["docker-registry", "serve", "config.yml"], registry)
        open_reg = start("registry-open", ["docker-registry", "serve", "open.yml"], registry)
        quiet_reg = start("registry-quiet", ["docker-registry", "serve", "quiet.yml"], registry)
        wait_http(f"http://{HOST}:{auth_port}/v2/", auth_reg)
        wait_http(f"http://{HOST}:{open_port}/v2/", open_reg)
        wait_http(f"http://{HOST}:{quiet_port}/v2/", quiet_reg)
        layout = tmp / "image"
        image_layout(layout, tag="1", layers=args.layers, layer_bytes=args.layer_kib * 1024)
        home = tmp / "home"
        home.mkdir()
        skopeo(home, "copy", "--dest-tls-verify=false", "--dest-creds", f"alice:{push}",
               f"oci:{layout}:1", f"docker://{HOST}:{auth_port}/acme/app:1")  # fmt: skip
        credentials = base64.b64encode(f"bob:{pull}".encode()).decode()
        token_url = (
            f"http://{HOST}:{store_port}/token?service=store-registry"
            "&scope=repository:acme/app:pull"
        )
        times: dict[str, list[float]] = {
            "auth": [], "quiet": [], "open": [], "challenge": [], "token": []
        }  # fmt: skip
        # The store's own CPU time (all its processes) while each copy runs, and over the
        # counted rounds: what the load on the machine stretches least.
        store_pids = process_tree(store.pid)
        store_cpu: dict[str, list[float]] = {"auth": [], "quiet": [], "open": []}
        cpu_from = 0.0
        print(f"load average before: {loadavg()}")
        with httpx.Client(timeout=30) as client:
            for round_ in range(args.rounds + 1):  # the first round warms up, uncounted
                out = tmp / f"out-{round_}"
                sources = {
                    "auth": ("--src-creds", f"bob:{pull}", f"docker://{HOST}:{auth_port}/acme/app:1"),
                    "quiet": ("--src-creds", f"bob:{pull}", f"docker://{HOST}:{quiet_port}/acme/app:1"),
                    "open": (f"docker://{HOST}:{open_port}/acme/app:1",),
                }  # fmt: skip
                # the three copies in turn, in an order that rotates from round to round
                order = list(sources)[round_ % 3 :] + list(sources)[: round_ % 3]
                copied, cpu_of = {}, {}
                for name in order:
                    cpu_before = cpu_ms(store_pids)
                    copied[name] = skopeo(
                        home, "copy", "--src-tls-verify=false", *sources[name],
                        f"oci:{out}-{name}:1",
                    )  # fmt: skip
                    cpu_of[name] = cpu_ms(store_pids) - cpu_before
                auth_s, quiet_s, open_s = copied["auth"], copied["quiet"], copied["open"]
                started = time.perf_counter()
                challenge = client.get(f"http://{HOST}:{auth_port}/v2/")
                challenge_s = time.perf_counter() - started
                started = time.perf_counter()
                token = client.get(token_url, headers={"Authorization": f"Basic {credentials}"})
                token_s = time.perf_counter() - started
                if challenge.status_code != 401 or token.status_code != 200:
                    raise SystemExit(
                        f"challenge {challenge.status_code}, token {token.status_code}"
                    )
                for name in sources:
                    shutil.rmtree(f"{out}-{name}", ignore_errors=True)
                if round_:
                    for name in store_cpu:
                        store_cpu[name].append(cpu_of[name])
                    times["auth"].append(auth_s * 1000)
                    times["quiet"].append(quiet_s * 1000)
                    times["open"].append(open_s * 1000)
                    times["challenge"].append(challenge_s * 1000)
                    times["token"].append(token_s * 1000)
                else:
                    time.sleep(1.5)  # the store adds its counts to the metrics once a second
                    granted = _granted(client, store_port)
                    # the push's notification and the warm-up's pull: not in the figure below
                    warm_events = _route_time(client, store_port, "/registry/events")
                    cpu_from = cpu_ms(store_pids)
        print(
            f"{args.rounds} interleaved rounds, one image of {args.layers} layers × "
            f"{args.layer_kib} KiB"
        )
        print(f"{'case':<12}{'median ms':>11}{'p90 ms':>9}")
        for name, values in times.items():
            p90 = percentile(values, 90)
            print(f"{name:<12}{statistics.median(values):>11.1f}{p90:>9.1f}")
        auth_m, open_m = statistics.median(times["auth"]), statistics.median(times["open"])
        extra = auth_m - open_m
        challenge_m, token_m = (
            statistics.median(times["challenge"]),
            statistics.median(times["token"]),
        )
        time.sleep(1.5)  # the last round's pull reaches search (and the metrics)
        cpu_total = cpu_ms(store_pids) - cpu_from
        per_round = (_granted(httpx.Client(), store_port) - granted) / args.rounds
        print(
            f"tokens the store granted per round: {per_round:.1f} (its metrics; the bench's "
            "own token request included)"
        )
        events, seconds = _route_time(httpx.Client(), store_port, "/registry/events")
        events, seconds = events - warm_events[0], seconds - warm_events[1]
        if events:
            print(
                f"pull notifications the store answered in the counted rounds: {events:.0f}, "
                f"{seconds / events * 1000:.1f} ms each (mean, in the store; the push's "
                f"notification and the warm-up's left out: {warm_events[0]:.0f}, "
                f"{warm_events[1] / max(warm_events[0], 1) * 1000:.1f} ms each)"
            )
        print(
            f"store CPU per round: {cpu_total / args.rounds:.1f} ms (its processes, the counted "
            "rounds and the last one's search refresh; a round is one authenticated copy with "
            "its pull notification, one without notification and the bench's own token "
            "request); while each copy ran (mean): "
            + ", ".join(f"{n} {statistics.fmean(v):.1f} ms" for n, v in store_cpu.items())
        )
        quiet_m = statistics.median(times["quiet"])
        per_round = statistics.median(
            a / o for a, o in zip(times["auth"], times["open"], strict=True)
        )
        quiet_round = statistics.median(
            q / o for q, o in zip(times["quiet"], times["open"], strict=True)
        )
        print(
            f"ratio auth / open = {auth_m / open_m:.2f} (medians), {per_round:.2f} (median of "
            "the rounds' ratios)  (target <= 1.10)"
        )
        print(
            f"ratio quiet / open = {quiet_m / open_m:.2f} (medians), {quiet_round:.2f} (median "
            "of the rounds' ratios): token auth without the pull notification"
        )
        print(f"what the pull notification adds: auth - quiet = {auth_m - quiet_m:.1f} ms per pull")
        print(
            f"extra per pull {extra:.1f} ms: challenge {challenge_m:.1f}, token request "
            f"{token_m:.1f}, the rest {extra - challenge_m - token_m:.1f}"
        )
        print(
            f"an authenticated pull, split (medians): registry challenge {challenge_m:.1f} ms, "
            f"token request {token_m:.1f} ms, transfer {open_m:.1f} ms (the copy without "
            f"auth), the rest {extra - challenge_m - token_m:.1f} ms (requests again with the "
            "token, the registry's token checks, the pull notification)"
        )
        print(f"load average after: {loadavg()}")
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _granted(client: Any, port: int) -> float:
    """Tokens the store has granted (its metrics; the bench's own token requests included)."""
    text = client.get(f"http://{HOST}:{port}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("store_registry_token_decisions_total{") and 'outcome="granted"' in line
    )


def _route_time(client: Any, port: int, route: str) -> tuple[float, float]:
    """(requests, seconds) the store spent on ``route``, from its metrics."""
    count = total = 0.0
    for line in client.get(f"http://{HOST}:{port}/metrics").text.splitlines():
        if f'route="{route}"' not in line:
            continue
        if line.startswith("store_http_request_duration_seconds_count{"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("store_http_request_duration_seconds_sum{"):
            total += float(line.rsplit(" ", 1)[1])
    return count, total


if __name__ == "__main__":
    sys.exit(main())
