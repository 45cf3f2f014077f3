"""The registry's configuration, written by the store: token auth pointing at the store,
notifications to the store, and the bundle of certificates of every key it must trust.

The registry reads ``bundle.pem`` only when it starts: after a key rotation, rewrite the
bundle and restart the registry before the new key signs (docs/registry.md).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from sqlalchemy.orm import Session

from store.config import Settings
from store.keys import service as keys

BUNDLE_NAME = "bundle.pem"
CONFIG_NAME = "config.yml"


@dataclass(frozen=True)
class WrittenConfig:
    config_path: Path
    bundle_path: Path
    kids: list[str]
    registry_url: str
    events_url: str


def http_secret(settings: Settings) -> str:
    """The registry's ``http.secret`` (signs upload state), derived from the store's secret
    so every rewrite gives the same value."""
    return hmac.new(
        settings.resolved_secret_key.encode(), b"registry-http-secret", hashlib.sha256
    ).hexdigest()


def listen_address(registry_url: str) -> str:
    parts = urlsplit(registry_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def render(
    settings: Settings,
    *,
    registry_url: str,
    bundle_path: Path,
    storage_dir: Path,
    addr: str | None = None,
) -> dict[str, Any]:
    """distribution 2.8's config.yml as a dict (see the facts sheet, section 1)."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": addr or listen_address(registry_url),
            "secret": http_secret(settings),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {
            "token": {
                "realm": f"{settings.public_url}/token",
                "service": settings.registry_service,
                "issuer": settings.registry_issuer,
                "rootcertbundle": str(bundle_path),
            }
        },
        "notifications": {
            "events": {"includereferences": True},
            "endpoints": [
                {
                    "name": "store-events",
                    "url": settings.registry_events_url,
                    "headers": {"Authorization": [f"Bearer {settings.resolved_notify_secret}"]},
                    "timeout": "2s",
                    "threshold": 5,
                    "backoff": "1s",
                    # Blob events carry nothing the store uses (pulls are counted on manifest
                    # GETs, pushes recorded on manifest PUTs): do not send them.
                    "ignore": {"mediatypes": ["application/octet-stream"]},
                }
            ],
        },
    }


def bundle(session: Session, settings: Settings) -> tuple[str, list[str]]:
    """PEM certificates of every registry key not retired (the signing key created first if
    there is none), and their kids."""
    keys.ensure_key(session, purpose="registry", secret=settings.resolved_secret_key)
    trusted = [k for k in keys.trusted_keys(session, "registry") if k.certificate_pem]
    pem = "".join(
        k.certificate_pem if k.certificate_pem.endswith("\n") else k.certificate_pem + "\n"
        for k in trusted
    )
    return pem, [k.kid for k in trusted]


def write(
    session: Session,
    settings: Settings,
    *,
    registry_url: str,
    out_dir: Path,
    storage_dir: Path | None = None,
    addr: str | None = None,
) -> WrittenConfig:
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle_path = out_dir / BUNDLE_NAME
    pem, kids = bundle(session, settings)
    config = render(
        settings,
        registry_url=registry_url.rstrip("/"),
        bundle_path=bundle_path,
        storage_dir=(storage_dir or out_dir / "data").resolve(),
        addr=addr,
    )
    config_path = out_dir / CONFIG_NAME
    _write(bundle_path, pem, 0o644)
    # The config holds the notification secret: readable by its owner only.
    _write(config_path, yaml.safe_dump(config, sort_keys=False), 0o600)
    return WrittenConfig(
        config_path=config_path,
        bundle_path=bundle_path,
        kids=kids,
        registry_url=registry_url.rstrip("/"),
        events_url=config["notifications"]["endpoints"][0]["url"],
    )


def _write(path: Path, content: str, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(content)
    tmp.chmod(mode)
    tmp.replace(path)
