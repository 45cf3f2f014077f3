"""License signing and verification throughput against raw Ed25519 in the same run.

    python bench/license.py [--seconds 0.25] [--rounds 15]

- store sign: build the v1 payload from an entitlement and sign it as a compact JWS
  (``store.licensing.service.license_payload`` + ``sign``), i.e. what issuing costs minus
  the database;
- raw sign: ``Ed25519PrivateKey.sign`` over a message of the same length;
- store verify: ``store.licensing.verify.Verifier.verify`` (parse, alg/typ/kid checks,
  signature, payload decode, version and date checks) with a reused Verifier;
- raw verify: ``Ed25519PublicKey.verify`` over the same message.

Rounds interleave the four measurements so that machine drift hits them alike; rates are per
CPU-second of this process; the ratio is taken per round and the median of the rounds is
printed. Target: store ≥ 70 % of raw.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where sibling scripts (token.py)
# would shadow standard modules: put the repository there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ed25519

from store.accounts.models import Account
from store.catalog.models import Product, Tier
from store.db import utcnow
from store.keys import crypto
from store.keys.service import LoadedKey
from store.licensing import service, verify
from store.licensing.models import Entitlement


def sample_entitlement() -> Entitlement:
    account = Account(id=uuid.uuid4(), username="customer", display_name="Cus Tomer")
    product = Product(id=uuid.uuid4(), repository="acme/redis-ha", kind="image", title="Redis HA")
    tier = Tier(id=uuid.uuid4(), slug="pro", name="Pro")
    now = utcnow()
    return Entitlement(
        id=uuid.uuid4(),
        account=account,
        organization=None,
        product=product,
        tier=tier,
        status="active",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=365),
        grace_until=now + timedelta(days=379),
        seats=5,
        features=["sso", "backup", "metrics"],
    )


def rate(func: Callable[[], object], seconds: float) -> float:
    """Operations per CPU-second of ``func`` over about ``seconds`` of this process's CPU
    time (CPU time, not wall time, so other load on the machine distorts less)."""
    n, batch = 0, 32
    start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            func()
        n += batch
        now = time.process_time()
        if now >= deadline:
            return n / (now - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="per case and round")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)

    private = ed25519.Ed25519PrivateKey.generate()
    key = LoadedKey("lic-bench", "EdDSA", private, private.public_key())
    entitlement = sample_entitlement()
    issuer = "https://store.example.com"
    license_id = uuid.uuid4()

    def store_sign() -> str:
        payload = service.license_payload(
            entitlement, license_id=license_id, issuer=issuer, now=utcnow()
        )
        return service.sign(key, payload)

    token = store_sign()
    message = token.rsplit(".", 1)[0].encode()
    signature = private.sign(message)
    public = private.public_key()
    jwk = {**crypto.public_jwk(public), "kid": key.kid, "alg": "EdDSA", "use": "sig"}
    verifier = verify.Verifier({"keys": [jwk]})
    assert verifier.verify(token).valid

    cases: dict[str, Callable[[], object]] = {
        "raw sign": lambda: private.sign(message),
        "store sign": store_sign,
        "raw verify": lambda: public.verify(signature, message),
        "store verify": lambda: verifier.verify(token),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, func in cases.items():
            results[name].append(rate(func, args.seconds))

    print(f"token: {len(token)} bytes; {args.rounds} rounds x {args.seconds:.2f} CPU-s per case")
    print(f"{'case':<14}{'ops/s (median)':>16}{'µs/op':>10}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<14}{median:>16,.0f}{1e6 / median:>10.1f}")
    for op in ("sign", "verify"):
        ratios = [s / r for s, r in zip(results[f"store {op}"], results[f"raw {op}"], strict=True)]
        print(f"store/raw {op}: {statistics.median(ratios):.0%} (per-round median; target >= 70%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
