"""A realistic demo catalog (publishers, products, tiers, accounts) and the service that
loads it.

``seed`` is idempotent: what exists is kept as it is (so an operator's later edits
survive), what is missing is created. Demo accounts are recognised by their e-mail
address; their passwords are set to the one given on every run, so the credentials
printed are always the ones that work. A username or organization of the same name that
does not belong to the demo is never touched: seeding stops with a conflict instead.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import followers
from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.catalog import service as catalog
from store.catalog.models import Product
from store.catalog.periods import BillingKind
from store.config import Settings
from store.db import utcnow
from store.errors import Conflict
from store.licensing import entitlements as licensing
from store.licensing.models import Entitlement
from store.registry import hub
from store.signing import certification
from store.signing import publisher_keys as signing_keys
from store.signing import service as signing
from store.signing import verify as signing_verify

EMAIL_DOMAIN = "demo.store.example"  # RFC 2606: never a real mailbox


# --- the data -------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoTier:
    slug: str
    name: str
    billing: BillingKind
    amount_minor: int = 0
    currency: str = "usd"
    trial_days: int = 0
    seats: int | None = None
    public: bool = False
    features: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class DemoProduct:
    org: str
    slug: str
    kind: str  # image | plugin
    title: str
    summary: str
    categories: tuple[str, ...]
    platforms: tuple[str, ...]
    highlights: tuple[str, ...]
    tiers: tuple[DemoTier, ...]
    usage: str = ""  # run options for images, a first command for plugins
    official: bool = False
    certified: bool = False
    draft: bool = False

    @property
    def repository(self) -> str:
        return f"{self.org}/{self.slug}"


@dataclass(frozen=True)
class DemoOrg:
    slug: str
    name: str
    owner: str
    description: str
    website: str
    verified: bool


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    role: str  # for people reading the printed credentials
    is_admin: bool = False

    @property
    def email(self) -> str:
        return f"{self.username}@{EMAIL_DOMAIN}"


CATEGORIES = {
    "databases": "Databases",
    "monitoring": "Monitoring & Observability",
    "security": "Security",
    "networking": "Networking",
    "developer-tools": "Developer Tools",
    "storage": "Storage",
    "machine-learning": "Machine Learning",
    "messaging": "Messaging & Streaming",
    "web-servers": "Web Servers & Proxies",
}

ADMIN = "operator"
CUSTOMER = "casey"
USERS = (
    DemoUser(ADMIN, "Store Operator", "administrator", is_admin=True),
    DemoUser("nora", "Nora Lindqvist", "owner of northwind"),
    DemoUser("leo", "Leo Martins", "owner of lumen-labs"),
    DemoUser("iris", "Iris Okafor", "owner of ironclad"),
    DemoUser("paul", "Paul Renner", "owner of polaris-dev"),
    DemoUser("nadia", "Nadia Haddad", "owner of neuron-works"),
    DemoUser(CUSTOMER, "Casey Morgan", "customer"),
)

# fmt: off
ORGS = (
    DemoOrg(
        "northwind", "Northwind Data Systems", "nora",
        "Databases and storage for teams that cannot afford to lose a write.",
        "https://northwind.example", verified=True,
    ),
    DemoOrg(
        "lumen-labs", "Lumen Labs", "leo",
        "Observability tooling: metrics, logs and traces without the bill shock.",
        "https://lumen-labs.example", verified=True,
    ),
    DemoOrg(
        "ironclad", "Ironclad Security", "iris",
        "Security software for containers, from build to runtime.",
        "https://ironclad.example", verified=True,
    ),
    DemoOrg(
        "polaris-dev", "Polaris Open Tools", "paul",
        "Open-source infrastructure, with commercial support for those who need it.",
        "https://polaris.example", verified=False,
    ),
    DemoOrg(
        "neuron-works", "Neuron Works", "nadia",
        "Machine-learning infrastructure that runs on your own GPUs.",
        "https://neuron-works.example", verified=False,
    ),
)

# fmt: on

_AMD_ARM = ("linux/amd64", "linux/arm64")
_ALL = ("linux/amd64", "linux/arm64", "linux/arm/v7")


def _community(public: bool = True) -> DemoTier:
    return DemoTier(
        "community",
        "Community",
        BillingKind.FREE,
        public=public,
        features=("All core features", "Community forum support"),
        description="Free for any use, forever.",
    )


def _pro(amount: int, trial: int = 14) -> DemoTier:
    return DemoTier(
        "pro",
        "Pro",
        BillingKind.MONTH,
        amount,
        trial_days=trial,
        features=("Everything in Community", "E-mail support, next business day"),
        description="For production workloads.",
    )


def _business(amount: int, seats: int) -> DemoTier:
    return DemoTier(
        "business",
        "Business",
        BillingKind.YEAR,
        amount,
        seats=seats,
        features=("Everything in Pro", "24/7 support with a 1-hour response", "SSO and audit log"),
        description=f"Annual plan for up to {seats} nodes.",
    )


def _perpetual(amount: int) -> DemoTier:
    return DemoTier(
        "perpetual",
        "Perpetual license",
        BillingKind.ONE_TIME,
        amount,
        features=("Use the purchased version forever", "12 months of updates"),
        description="Pay once, keep it.",
    )


# fmt: off
PRODUCTS = (
    # --- northwind: databases and storage
    DemoProduct(
        "northwind", "pgvault", "image", "PGVault — highly available PostgreSQL",
        "PostgreSQL 16 with automatic failover, point-in-time recovery and encrypted backups.",
        ("databases",), _AMD_ARM,
        ("Leader election and failover in under 10 seconds",
         "Continuous WAL archiving to S3-compatible storage",
         "TLS everywhere, with certificates rotated for you"),
        (_community(), _pro(4900), _business(99000, seats=10)),
        usage="-p 5432:5432 -e PGVAULT_SUPERUSER_PASSWORD=change-me",
        official=True, certified=True,
    ),
    DemoProduct(
        "northwind", "tempo-tsdb", "image", "Tempo time-series database",
        "A compressed columnar time-series store with a PromQL-compatible query API.",
        ("databases", "monitoring"), _AMD_ARM,
        ("Ingests millions of samples per second on one node",
         "Downsampling and retention policies per metric",
         "Speaks Prometheus remote-write and PromQL"),
        (_community(public=False), _pro(2900, trial=30)),
        usage="-p 9201:9201 -v tempo-data:/var/lib/tempo",
        certified=True,
    ),
    DemoProduct(
        "northwind", "keystone-cache", "image", "Keystone in-memory cache",
        "A Redis-protocol cache with multi-threaded I/O and tiered storage on NVMe.",
        ("databases",), _ALL,
        ("Drop-in for Redis clients", "Tiering of cold keys to local NVMe",
         "Built-in cluster mode with resharding"),
        (_community(), _business(49000, seats=5)),
        usage="-p 6379:6379",
    ),
    DemoProduct(
        "northwind", "blockstore-volume", "plugin", "Blockstore volume plugin",
        "Replicated block volumes for Docker, backed by the disks you already have.",
        ("storage",), _AMD_ARM,
        ("Synchronous replication across three nodes", "Snapshots and clones in seconds",
         "Works with docker volume create and Compose"),
        (_pro(1900), _perpetual(29900)),
        usage="docker volume create -d northwind/blockstore-volume:latest -o size=20G data",
    ),
    DemoProduct(
        "northwind", "s3-backup", "image", "Nightly S3 backup agent",
        "Schedules, encrypts and verifies backups of volumes and databases to any S3 bucket.",
        ("storage", "databases"), _ALL,
        ("Client-side encryption with age keys", "Restore tests run after every backup",
         "PostgreSQL, MySQL and plain volumes"),
        (_community(),),
        usage="-v /var/lib/docker/volumes:/volumes:ro -e S3_BUCKET=backups",
    ),
    DemoProduct(
        "northwind", "docgrid", "image", "DocGrid document database (preview)",
        "A JSON document store with SQL queries. Preview: not yet published.",
        ("databases",), ("linux/amd64",),
        ("SQL over JSON documents", "Change streams", "Online schema validation"),
        (_community(public=False),),
        usage="-p 7700:7700",
        draft=True,
    ),
    # --- lumen-labs: observability
    DemoProduct(
        "lumen-labs", "beacon-metrics", "image", "Beacon metrics collector",
        "A lightweight agent that scrapes, relabels and ships metrics from every host.",
        ("monitoring",), _ALL,
        ("Single static binary, 20 MB of memory", "Prometheus and OpenTelemetry outputs",
         "Auto-discovers Docker containers"),
        (_community(),),
        usage="-v /var/run/docker.sock:/var/run/docker.sock:ro",
        official=True,
    ),
    DemoProduct(
        "lumen-labs", "lantern-logs", "image", "Lantern log search",
        "Full-text log search and alerting that stores a terabyte a day on commodity disks.",
        ("monitoring",), _AMD_ARM,
        ("Indexes structured and plain-text logs", "Saved searches become alerts",
         "Retention per stream"),
        (_community(public=False), _pro(7900), _business(149000, seats=20)),
        usage="-p 8080:8080 -v lantern-data:/data",
        certified=True,
    ),
    DemoProduct(
        "lumen-labs", "lumen-log-driver", "plugin", "Lumen logging driver",
        "A Docker logging driver that ships container logs to Lantern or any OTLP endpoint.",
        ("monitoring",), _AMD_ARM,
        ("Buffers to disk when the endpoint is down", "Adds container labels to every line",
         "Keeps docker logs working"),
        (_community(),),
        usage="docker run --log-driver lumen-labs/lumen-log-driver:latest nginx",
    ),
    DemoProduct(
        "lumen-labs", "tracewise", "image", "Tracewise distributed tracing",
        "Collects OpenTelemetry traces and finds the slow span for you.",
        ("monitoring", "developer-tools"), _AMD_ARM,
        ("Tail-based sampling keeps the interesting traces", "Service maps drawn from traffic",
         "Exemplars link metrics to traces"),
        (_pro(3900, trial=14), _business(89000, seats=10)),
        usage="-p 4317:4317 -p 16686:16686",
    ),
    DemoProduct(
        "lumen-labs", "uptime-sentinel", "image", "Uptime Sentinel",
        "HTTP, TCP and TLS-certificate checks with a status page your customers can read.",
        ("monitoring", "networking"), _ALL,
        ("Checks from several regions", "Public status page",
         "Alerts to e-mail, Slack and webhooks"),
        (_community(), _pro(900, trial=7)),
        usage="-p 3001:3001",
    ),
    # --- ironclad: security
    DemoProduct(
        "ironclad", "vault-gate", "image", "VaultGate secrets manager",
        "Short-lived credentials for databases and clouds, injected at container start.",
        ("security",), _AMD_ARM,
        ("Dynamic database credentials", "Secrets never written to disk",
         "Audit log of every read"),
        (_pro(5900), _business(120000, seats=25)),
        usage="-p 8200:8200 --cap-add IPC_LOCK",
        official=True, certified=True,
    ),
    DemoProduct(
        "ironclad", "scanline", "image", "Scanline image scanner",
        "Finds vulnerable packages, leaked secrets and misconfigurations in container images.",
        ("security", "developer-tools"), _AMD_ARM,
        ("CVE data refreshed hourly", "Fails CI on the severities you choose",
         "SBOM export (SPDX, CycloneDX)"),
        (_community(), _pro(2900)),
        usage="-v /var/run/docker.sock:/var/run/docker.sock:ro",
        certified=True,
    ),
    DemoProduct(
        "ironclad", "waf-edge", "image", "WAF Edge",
        "A web application firewall with the OWASP core rule set, in front of any HTTP service.",
        ("security", "web-servers"), _AMD_ARM,
        ("OWASP CRS 4 with low false positives", "Rate limiting per route", "Bot detection"),
        (_pro(9900, trial=14), _perpetual(89900)),
        usage="-p 443:8443 -e UPSTREAM=http://app:8080",
    ),
    DemoProduct(
        "ironclad", "authz-guard", "plugin", "AuthZ Guard",
        "A Docker authorization plugin: decide who may run privileged containers and mounts.",
        ("security",), ("linux/amd64",),
        ("Policies written in Rego", "Blocks privileged runs and host mounts", "Dry-run mode"),
        (_business(59000, seats=50),),
        usage="dockerd --authorization-plugin=ironclad/authz-guard:latest",
    ),
    DemoProduct(
        "ironclad", "cert-relay", "image", "CertRelay",
        "Obtains and renews TLS certificates (ACME) and hands them to your proxies.",
        ("security", "networking"), _ALL,
        ("ACME HTTP-01 and DNS-01", "Pushes renewed certificates to proxies", "Expiry alerts"),
        (_community(),),
        usage="-v certs:/certs -e ACME_EMAIL=ops@example.com",
    ),
    # --- polaris-dev: open tools
    DemoProduct(
        "polaris-dev", "meshnet", "plugin", "MeshNet overlay network",
        "An encrypted overlay network plugin that links containers across hosts and clouds.",
        ("networking",), _AMD_ARM,
        ("WireGuard encryption between hosts", "Works across NAT", "Network policies per label"),
        (_community(), _pro(1500)),
        usage="docker network create -d polaris-dev/meshnet:latest mesh",
    ),
    DemoProduct(
        "polaris-dev", "edge-proxy", "image", "Edge Proxy",
        "A reverse proxy and ingress with automatic HTTPS, HTTP/3 and zero-downtime reloads.",
        ("web-servers", "networking"), _ALL,
        ("Automatic HTTPS", "HTTP/3 and gRPC", "Configuration from container labels"),
        (_community(),),
        usage="-p 80:80 -p 443:443 -v /var/run/docker.sock:/var/run/docker.sock:ro",
        official=True,
    ),
    DemoProduct(
        "polaris-dev", "quill-ci", "image", "Quill CI runner",
        "Self-hosted CI runners that start in a second and cache layers between jobs.",
        ("developer-tools",), _AMD_ARM,
        ("Ephemeral, isolated job containers", "Shared layer cache",
         "GitHub and GitLab compatible"),
        (_community(), _business(39000, seats=10)),
        usage="-e QUILL_TOKEN=... -v /var/run/docker.sock:/var/run/docker.sock",
    ),
    DemoProduct(
        "polaris-dev", "gitforge", "image", "GitForge",
        "A lightweight Git server with code review, issues and a package registry.",
        ("developer-tools",), _ALL,
        ("Pull requests and reviews", "Built-in container registry", "LDAP and OIDC login"),
        (_community(), _perpetual(19900)),
        usage="-p 3000:3000 -p 2222:22 -v gitforge:/data",
    ),
    DemoProduct(
        "polaris-dev", "swiftmq", "image", "SwiftMQ message broker",
        "An AMQP 0.9.1 and MQTT broker with quorum queues and a web console.",
        ("messaging",), _AMD_ARM,
        ("Quorum queues replicated with Raft", "AMQP, MQTT and STOMP", "Web console and metrics"),
        (_community(), _pro(2500)),
        usage="-p 5672:5672 -p 15672:15672",
    ),
    DemoProduct(
        "polaris-dev", "streamline", "image", "Streamline event streaming",
        "A Kafka-API-compatible streaming platform without ZooKeeper or a JVM.",
        ("messaging", "databases"), _AMD_ARM,
        ("Kafka clients work unchanged", "Tiered storage to S3", "Single binary, no JVM"),
        (_pro(6900, trial=30), _business(139000, seats=12)),
        usage="-p 9092:9092 -v streamline:/var/lib/streamline",
    ),
    # --- neuron-works: machine learning
    DemoProduct(
        "neuron-works", "inference-server", "image", "Neuron inference server",
        "Serves PyTorch, ONNX and GGUF models behind one OpenAI-compatible HTTP API.",
        ("machine-learning",), ("linux/amd64", "linux/arm64"),
        ("Continuous batching on NVIDIA GPUs", "OpenAI-compatible endpoints",
         "Model hot-swap without downtime"),
        (_community(public=False), _pro(14900, trial=14), _business(299000, seats=8)),
        usage="--gpus all -p 8000:8000 -v models:/models",
    ),
    DemoProduct(
        "neuron-works", "notebook-studio", "image", "Notebook Studio",
        "Shared Jupyter notebooks with GPU scheduling and per-user environments.",
        ("machine-learning", "developer-tools"), ("linux/amd64",),
        ("JupyterLab with real-time collaboration", "GPU quotas per team",
         "Conda and pip environments"),
        (_community(), _pro(1900)),
        usage="-p 8888:8888 -v notebooks:/home/jovyan",
    ),
    DemoProduct(
        "neuron-works", "feature-store", "image", "Feature Store",
        "Defines, computes and serves ML features online and offline from one definition.",
        ("machine-learning", "databases"), _AMD_ARM,
        ("Point-in-time correct training sets", "Low-latency online serving", "Python SDK"),
        (_perpetual(49900), _business(199000, seats=10)),
        usage="-p 6566:6566",
    ),
    DemoProduct(
        "neuron-works", "gpu-exporter", "plugin", "GPU metrics exporter",
        "A Docker plugin exporting per-container GPU utilisation, memory and temperature.",
        ("machine-learning", "monitoring"), ("linux/amd64",),
        ("Per-container GPU attribution", "Prometheus endpoint", "Alerts on thermal throttling"),
        (_community(),),
        usage="docker plugin install neuron-works/gpu-exporter:latest",
    ),
)

# fmt: on

# What the demo customer holds: free "Get"s and an operator grant of a paid tier.
CUSTOMER_FREE = ("northwind/pgvault", "lumen-labs/beacon-metrics", "neuron-works/inference-server")
CUSTOMER_GRANTS = (("ironclad/vault-gate", "pro"),)


# --- the service ----------------------------------------------------------------------


@dataclass
class DemoAccount:
    username: str
    email: str
    password: str
    role: str
    created: bool


@dataclass
class DemoResult:
    accounts: list[DemoAccount] = field(default_factory=list)
    organizations: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    created_organizations: list[str] = field(default_factory=list)
    created_products: list[str] = field(default_factory=list)
    created_entitlements: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "accounts": [vars(a) for a in self.accounts],
            "organizations": self.organizations,
            "products": self.products,
            "created_organizations": self.created_organizations,
            "created_products": self.created_products,
            "created_entitlements": self.created_entitlements,
        }


def seed(
    session: Session,
    *,
    password: str,
    registry_host: str = "localhost:5000",
    settings: Settings | None,
) -> DemoResult:
    """Load the demo catalog; safe to run again. Never commits (the caller does). ``settings``
    write the notices the seeding mails (verification, certification); None: none mailed.

    ``registry_host`` is where the quick-start snippets in descriptions pull from.
    """
    followers.install()  # the demo publishes: the hub's visibility follows
    result = DemoResult()
    users = {u.username: _ensure_user(session, u, password, result) for u in USERS}
    admin = users[ADMIN]
    for slug, name in CATEGORIES.items():
        catalog.ensure_category(session, slug, name)
    orgs = {o.slug: _ensure_org(session, o, users[o.owner], admin, result, settings) for o in ORGS}
    for spec in PRODUCTS:
        org = orgs[spec.org]
        owner = users[next(o.owner for o in ORGS if o.slug == spec.org)]
        _ensure_product(session, spec, org, owner, admin, registry_host, result, settings)
    _ensure_customer_library(session, users[CUSTOMER], admin, result)
    return result


def _ensure_user(session: Session, spec: DemoUser, password: str, result: DemoResult) -> Account:
    account = accounts.find_account(session, spec.username)
    created = account is None
    if account is None:
        account = accounts.create_account(
            session,
            username=spec.username,
            email=spec.email,
            password=password,
            display_name=spec.display_name,
            is_admin=spec.is_admin,
            email_verified=True,
        )
    elif account.email != spec.email:
        raise Conflict(
            f"The username '{spec.username}' belongs to an account outside the demo; "
            "not seeding over it"
        )
    else:
        # So that the printed credentials are the ones that work.
        accounts.set_password(session, account=account, password=password)
        if spec.is_admin and not account.is_admin:
            accounts.set_admin(session, account=account, is_admin=True, actor=None)
    result.accounts.append(
        DemoAccount(spec.username, spec.email, password, spec.role, created=created)
    )
    return account


def _ensure_org(
    session: Session,
    spec: DemoOrg,
    owner: Account,
    admin: Account,
    result: DemoResult,
    settings: Settings | None,
) -> Organization:
    org = session.scalar(select(Organization).where(Organization.slug == spec.slug))
    if org is None:
        org = accounts.create_organization(
            session,
            owner=owner,
            slug=spec.slug,
            name=spec.name,
            description=spec.description,
            website=spec.website,
        )
        if spec.verified:
            accounts.set_verified(
                session,
                org=org,
                actor=admin,
                verified=True,
                note="Demo publisher",
                settings=settings,
            )
        result.created_organizations.append(spec.slug)
    elif accounts.role_of(session, owner, org) != "owner":
        raise Conflict(
            f"The organization '{spec.slug}' exists outside the demo; not seeding into it"
        )
    result.organizations.append(spec.slug)
    return org


def _ensure_product(
    session: Session,
    spec: DemoProduct,
    org: Organization,
    owner: Account,
    admin: Account,
    registry_host: str,
    result: DemoResult,
    settings: Settings | None,
) -> None:
    result.products.append(spec.repository)
    if catalog.find_product_by_repository(session, spec.repository) is not None:
        return
    product = catalog.create_product(
        session,
        actor=owner,
        org=org,
        kind=spec.kind,
        slug=spec.slug,
        title=spec.title,
        summary=spec.summary,
        description_md=_description(spec, registry_host),
        categories=list(spec.categories),
        platforms=list(spec.platforms),
        docs_url=f"https://docs.{spec.org}.example/{spec.slug}",
        support_url=f"https://{spec.org}.example/support",
    )
    for tier in spec.tiers:
        catalog.create_tier(
            session,
            actor=owner,
            product=product,
            slug=tier.slug,
            name=tier.name,
            description=tier.description,
            billing=tier.billing,
            amount_minor=tier.amount_minor,
            currency=tier.currency,
            trial_days=tier.trial_days,
            seats=tier.seats,
            features=list(tier.features),
            public=tier.public,
        )
    if not spec.draft:
        catalog.set_status(session, actor=owner, product=product, status="published")
    if spec.official:
        catalog.set_badges(session, actor=admin, product=product, official=True)
    if spec.certified and not spec.draft:
        _certify(session, product, owner, admin, registry_host, settings)
    result.created_products.append(spec.repository)


def _certify(
    session: Session,
    product: Product,
    owner: Account,
    admin: Account,
    registry_host: str,
    settings: Settings | None,
) -> None:
    """Certify the way a publisher and a reviewer would: a signing key registered for the
    organization, the `latest` tag (a stand-in digest: the demo pushes no images) signed
    with it, a certification request, and the review's approval. The key's private half is
    not kept; sign real pushes with a key of your own (docs/signing.md)."""
    key = ed25519.Ed25519PrivateKey.generate()
    signing_keys.add_key(
        session,
        org=product.organization,
        actor=owner,
        public_pem=signing_verify.public_pem(key),
        label=f"demo key for {product.repository}",
    )
    digest = "sha256:" + hashlib.sha256(f"demo:{product.repository}".encode()).hexdigest()
    hub.record_push(
        session, name=product.repository, digest=digest,
        media_type="application/vnd.oci.image.manifest.v1+json", size=1024, tag="latest",
        actor=owner.username, at=utcnow(),
    )  # fmt: skip
    payload = signing_verify.make_payload(f"{registry_host}/{product.repository}", digest)
    signing.upload_signature(
        session,
        org=product.organization,
        uploader=owner,
        repository=product.repository,
        digest=digest,
        payload_b64=base64.b64encode(payload).decode(),
        signature_b64=base64.b64encode(signing_verify.sign(key, payload)).decode(),
        registry_host=registry_host,
        tag="latest",
    )
    request = certification.submit(session, actor=owner, product=product, tag="latest")
    certification.approve(
        session, actor=admin, request=request, note="Demo review", settings=settings
    )


def _ensure_customer_library(
    session: Session, customer: Account, admin: Account, result: DemoResult
) -> None:
    for repository in CUSTOMER_FREE:
        product = catalog.get_product_by_repository(session, repository)
        free = next((t for t in product.active_tiers if t.is_free), None)
        if free is None or product.status != "published":
            continue  # changed by an operator since; leave it
        before = _holds(session, customer, free.id)
        licensing.get_free_tier(session, account=customer, tier=free)
        result.created_entitlements += 0 if before else 1
    for repository, tier_slug in CUSTOMER_GRANTS:
        product = catalog.get_product_by_repository(session, repository)
        tier = catalog.get_tier_by_slug(session, product, tier_slug)
        if not _holds(session, customer, tier.id):
            licensing.grant(
                session, actor=admin, tier=tier, account=customer, reason="Demo license"
            )
            result.created_entitlements += 1


def _holds(session: Session, account: Account, tier_id: Any) -> bool:
    return (
        session.scalar(
            select(Entitlement.id)
            .where(Entitlement.account_id == account.id, Entitlement.tier_id == tier_id)
            .limit(1)
        )
        is not None
    )


def _description(spec: DemoProduct, registry_host: str) -> str:
    ref = f"{registry_host}/{spec.repository}:latest"
    if spec.kind == "image":
        quick = [f"docker login {registry_host}", f"docker pull {ref}"]
        quick.append(f"docker run -d --name {spec.slug} {spec.usage} {ref}".replace("  ", " "))
    else:
        quick = [f"docker login {registry_host}", f"docker plugin install {ref}"]
        if spec.usage:
            quick.append(spec.usage)
    tiers = [f"- **{t.name}**: {t.description or ', '.join(t.features)}" for t in spec.tiers]
    return "\n".join(
        [
            spec.summary,
            "",
            "## Highlights",
            "",
            *(f"- {h}" for h in spec.highlights),
            "",
            "## Quick start",
            "",
            "```sh",
            *quick,
            "```",
            "",
            "## Editions",
            "",
            *tiers,
            "",
            "## Platforms",
            "",
            ", ".join(f"`{p}`" for p in spec.platforms),
            "",
        ]
    )
