"""What a tag holds, per platform: OS, architecture, variant, digest and size, read from the
manifest or image index the registry holds (with the store's own credential; these reads
are not counted as pulls) and kept on the tag (``hub_tags.platforms``) until the next push.

Read by ``store registry sync`` for the tags it adds or changes (and those still without
them), and lazily by the repository page and API; if the registry cannot be reached the
page shows what is known and the next view tries again (not more often than once a minute).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.errors import ServiceUnavailable
from store.registry import hub
from store.registry.models import HubTag

if TYPE_CHECKING:  # sync fills platforms with read_platforms
    from store.registry.sync import RegistryClient

log = logging.getLogger("store.registry.details")
RETRY_AFTER = 60.0  # seconds between attempts after the registry failed
_failed_at: dict[str, float] = {}
_lock = threading.Lock()

Platform = dict[str, Any]


def _size(document: dict[str, Any]) -> int:
    blobs = [document.get("config"), *(document.get("layers") or [])]
    return sum(int(b.get("size") or 0) for b in blobs if isinstance(b, dict))


def _platform_of_config(client: RegistryClient, name: str, document: dict[str, Any]) -> Platform:
    config = document.get("config") or {}
    digest = config.get("digest") if isinstance(config, dict) else None
    found: dict[str, Any] = {}
    if isinstance(digest, str):
        raw = client.blob(name, digest)
        if raw is not None:
            try:
                loaded = json.loads(raw)
                found = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                found = {}
    return {
        "os": str(found.get("os") or ""),
        "architecture": str(found.get("architecture") or ""),
        "variant": str(found.get("variant") or ""),
    }


def read_platforms(client: RegistryClient, name: str, digest: str) -> list[Platform] | None:
    """The platforms of a manifest or image index; None if the registry no longer has it."""
    found = client.manifest_body(name, digest)
    if found is None:
        return None
    body, media_type, _ = found
    document = json.loads(body)
    if media_type in hub.INDEX_MEDIA_TYPES or "manifests" in document:
        platforms = []
        for child in document.get("manifests") or []:
            platform = child.get("platform") or {}
            if platform.get("os") == "unknown":
                continue  # attestations and other artifacts, not a platform
            child_digest = str(child.get("digest") or "")
            child_found = client.manifest_body(name, child_digest) if child_digest else None
            size = _size(json.loads(child_found[0])) if child_found else 0
            platforms.append(
                {
                    "os": str(platform.get("os") or ""),
                    "architecture": str(platform.get("architecture") or ""),
                    "variant": str(platform.get("variant") or ""),
                    "digest": child_digest,
                    "size": size,
                }
            )
        return platforms
    platform = _platform_of_config(client, name, document)
    return [{**platform, "digest": digest, "size": _size(document)}]


def fill(
    factory: sessionmaker[Session], client: RegistryClient, name: str, tags: list[HubTag]
) -> dict[str, list[Platform]]:
    """Platforms of the tags that lack them, read now and written in a transaction of their
    own (pages read in read-only transactions); by tag name. Empty when the registry failed
    less than RETRY_AFTER seconds ago or fails now."""
    missing = [t for t in tags if t.platforms is None and t.digest]
    if not missing:
        return {}
    with _lock:
        if time.monotonic() - _failed_at.get(client.base_url, -RETRY_AFTER) < RETRY_AFTER:
            return {}
    read: dict[str, list[Platform]] = {}
    by_digest: dict[str, list[Platform] | None] = {}
    try:
        for tag in missing:
            if tag.digest not in by_digest:
                by_digest[tag.digest] = read_platforms(client, name, tag.digest)
            platforms = by_digest[tag.digest]
            if platforms is not None:
                read[tag.name] = platforms
    except (ServiceUnavailable, ValueError, KeyError, TypeError) as exc:
        with _lock:
            _failed_at[client.base_url] = time.monotonic()
        log.warning("tag details of %s not read: %s", name, exc)
        return read
    if read:
        with factory() as session:
            rows = session.scalars(
                select(HubTag).where(HubTag.id.in_([t.id for t in missing if t.name in read]))
            )
            for row in rows:
                if row.digest == next(t.digest for t in missing if t.id == row.id):
                    row.platforms = read[row.name]
            session.commit()
    return read
