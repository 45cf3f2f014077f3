"""One typed settings object, read from STORE_* environment variables and an optional .env."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORE_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./store-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite in the data directory."
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Address users and the registry reach the store at.",
    )
    secret_key: str | None = Field(
        default=None, description="Signs sessions and encrypts keys; generated on first start."
    )
    environment: Literal["development", "production", "test"] = "development"

    # Registry token authentication (distribution "token" auth).
    registry_url: str = "http://127.0.0.1:5000"
    registry_service: str = "store-registry"
    registry_issuer: str = "store-token-issuer"
    registry_token_ttl: int = Field(default=300, ge=60, le=3600)
    # How often each process looks again at which key signs (a rotation or activation made
    # elsewhere, e.g. on another host, is picked up within this many seconds).
    keys_refresh_seconds: float = Field(default=30.0, ge=1, le=300)
    registry_notify_secret: str | None = None
    # Registry refresh tokens (store.registry.refresh): each use extends the expiry by
    # refresh_token_days, never past refresh_token_max_days from the log-in.
    refresh_token_days: int = Field(default=30, ge=1, le=30)
    refresh_token_max_days: int = Field(default=90, ge=1, le=365)
    # The store's address as the registry reaches it (compose: http://store:8000), for
    # notifications; default the public URL (docs/deploy.md).
    registry_notify_url: str | None = None

    # Licenses: the issuer id licenses carry (default: derived from the secret key).
    license_issuer_id: str | None = Field(default=None, min_length=1, max_length=100)

    # Operations (store/observability; docs/operations.md).
    allow_http: bool = Field(default=False, description="Production without TLS (no https).")
    log_format: Literal["auto", "json", "text"] = "auto"
    metrics_token: str | None = None
    # /metrics only for clients on loopback or private networks that did not come through
    # a proxy (no Forwarded / X-Forwarded-For): production needs this or a metrics token.
    metrics_private: bool = False
    # FastAPI's own OpenTelemetry spans, metrics and logs (for an operator who configures an
    # OpenTelemetry SDK); off, no request pays for looking for a configured provider.
    opentelemetry: bool = False
    # Production refuses the built-in test gateway (paid tiers bought with test cards)
    # unless this says so; every page then carries a banner.
    allow_test_payments: bool = False

    # Web sessions.
    # A web session ends this long after it began (absolute) or after this long without a
    # request (idle), whichever comes first (store.accounts.sessions).
    session_max_age: int = Field(default=14 * 24 * 3600, ge=300)
    session_idle_timeout: int = Field(default=2 * 24 * 3600, ge=300)
    cookie_secure: bool | None = None
    # Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For is
    # believed for rate limits; empty: the socket peer is the client (docs/security.md).
    trusted_proxies: str = ""

    # Request bounds (store.request_limits, store.observability.http_guard; docs/security.md).
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=16 * 1024, description="Largest request body most routes read."
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds a client has to send a request's headers."
    )
    idle_connection_timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a new connection may stay open without sending a byte.",
    )

    # Administrators and organization owners must use two-factor sign-in (pages ask them to
    # set it up before anything else).
    two_factor_required_for_staff: bool = False

    # Password checks (argon2id) at once per process, and how long a check waits for a
    # free slot before the request is refused with 429 (store.security; docs/security.md).
    password_check_slots: int | None = Field(
        default=None, ge=1, le=256, description="Default: the number of CPU cores."
    )
    password_check_wait: float = Field(default=2.0, ge=0, le=60)

    # Paging.
    page_size: int = Field(default=24, ge=1, le=100)

    # Outgoing mail (store/mail; docs/mail.md). Without an SMTP host, messages are written
    # as .eml files under <data dir>/mail and logged.
    mail_from: str | None = Field(
        default=None, description="From address; default no-reply@<public URL host>."
    )
    mail_smtp_host: str | None = None
    mail_smtp_port: int | None = Field(default=None, ge=1, le=65535)
    mail_smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    mail_smtp_username: str | None = None
    mail_smtp_password: str | None = None
    mail_smtp_timeout: float = Field(default=30.0, gt=0, le=600)
    # Run the sender inside `store serve` (false: only `store mail send` processes deliver).
    mail_sender: bool = True
    mail_poll_interval: float = Field(default=2.0, gt=0, le=3600)
    # Retries: base * 2**(attempt-1) seconds, at most mail_retry_max, mail_max_attempts in all.
    mail_retry_base: float = Field(default=30.0, gt=0)
    mail_retry_max: float = Field(default=3600.0, gt=0)
    mail_max_attempts: int = Field(default=10, ge=1, le=100)

    # Automated builds (store.builds; docs/builds.md): `store builds worker` processes.
    # Workspaces (clones) and buildah's storage live under builds_dir (default: the data
    # dir's builds/); put it in memory (/dev/shm) for speed where there is room.
    builds_dir: Path | None = None
    build_timeout: int = Field(default=1800, ge=30, le=86400)
    builds_per_namespace: int = Field(default=2, ge=1, le=100)
    builds_poll_interval: float = Field(default=2.0, gt=0, le=3600)
    # Git sources on this machine (a path or file://): allowed unless in production.
    builds_allow_local_sources: bool | None = None

    @field_validator("public_url", "registry_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{(self.data_dir / 'store.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return self.public_url.startswith("https://")

    @cached_property
    def resolved_secret_key(self) -> str:
        """The configured secret, or one generated once and kept in the data directory."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if path.exists():
            return path.read_text().strip()
        self.ensure_data_dir()
        value = secrets.token_urlsafe(48)
        # Created exclusively (two processes starting together agree on one secret) and
        # owner-only from its first byte.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value

    @property
    def registry_events_url(self) -> str:
        """Where the registry posts its notifications."""
        base = (self.registry_notify_url or self.public_url).rstrip("/")
        return base if base.endswith("/registry/events") else f"{base}/registry/events"

    @cached_property
    def resolved_license_issuer_id(self) -> str:
        """The stable id licenses and revocation lists name their issuer by (claim ``isid``):
        it survives a change of public URL. Derived from the store's secret (which the
        signing keys are encrypted under, so it changes with them or not at all), unless
        set."""
        if self.license_issuer_id:
            return self.license_issuer_id
        import hashlib
        import hmac
        import uuid

        digest = hmac.new(
            self.resolved_secret_key.encode(), b"license-issuer-id", hashlib.sha256
        ).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    @cached_property
    def resolved_notify_secret(self) -> str:
        if self.registry_notify_secret:
            return self.registry_notify_secret
        import hashlib
        import hmac

        return hmac.new(
            self.resolved_secret_key.encode(), b"registry-notifications", hashlib.sha256
        ).hexdigest()

    @property
    def mail_dir(self) -> Path:
        """Where the file backend writes messages (no SMTP host configured)."""
        return self.data_dir / "mail"

    @property
    def resolved_mail_from(self) -> str:
        if self.mail_from:
            return self.mail_from
        from urllib.parse import urlsplit

        host = urlsplit(self.public_url).hostname or "localhost"
        return f"Store <no-reply@{host}>"

    @property
    def resolved_smtp_port(self) -> int:
        if self.mail_smtp_port:
            return self.mail_smtp_port
        return {"tls": 465, "starttls": 587}.get(self.mail_smtp_security, 25)

    @property
    def resolved_builds_dir(self) -> Path:
        return (self.builds_dir or self.data_dir / "builds").resolve()

    @property
    def local_build_sources(self) -> bool:
        if self.builds_allow_local_sources is not None:
            return self.builds_allow_local_sources
        return self.environment != "production"

    def ensure_data_dir(self) -> None:
        """The data directory, readable by its owner only (it holds the database and the
        secret); one that exists with wider permissions is narrowed."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.data_dir.stat().st_mode & 0o077:
            self.data_dir.chmod(0o700)
