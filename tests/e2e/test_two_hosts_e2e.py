"""The two-host run of bench/load.py at a small size: two `store serve` hosts on one
PostgreSQL database behind each balancer (deploy/haproxy, deploy/nginx), a docker-registry
notifying through the balancer, one host killed half-way. Its invariants, not its timings:
0 errors, limits shared, sessions valid on both hosts, a key rotation picked up by the other
host, every payment event fulfilled once, every pull counted once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from store import PROJECT_DIR
from tests.pg import PG_URL

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)"),
]


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
def test_two_hosts_behind_a_balancer_keep_every_invariant(balancer: str) -> None:
    for tool in (balancer, "docker-registry"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            pytest.skip(f"{tool} is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORE_", "STRIPE_"))}
    env["BENCH_PG_URL"] = PG_URL
    done = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "bench" / "load.py"), "--hosts", "2",
         "--balancer", balancer, "--seconds", "8", "--rate", "10", "--kill-at", "4"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    assert f"behind {balancer}" in out
    assert "rate limit shared by the hosts: yes" in out
    assert "a session made on one host valid on the others: yes" in out
    assert "a registry key activated through one host signs on every host: yes" in out
    assert "killed host 2" in out
    assert ", 0 lost or doubled" in out
    assert "manifest GETs, each counted once" in out
    all_row = next(line for line in out.splitlines() if line.startswith("all "))
    assert all_row.split()[3] == "0", all_row  # errors
