"""Reconcile the hub with what the registry really holds (/v2/_catalog and tags lists).

Notifications can be lost (the registry queues them in memory), so an operator or a timer
runs ``store registry sync``: it lists every repository and tag, resolves each tag's digest
with a manifest HEAD, and creates, updates or removes hub records to match. The store talks
to the registry with tokens it mints for itself (subject ``_store-sync``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from store.config import Settings
from store.db import utcnow
from store.errors import ServiceUnavailable
from store.keys.service import LoadedKey
from store.registry import details, hub, tokens
from store.registry.credentials import SYNC_USERNAME
from store.registry.models import HubRepository, HubTag
from store.registry.scopes import valid_repository

if TYPE_CHECKING:  # imported when a client is made (httpx and its CLI: ≈ 7 MiB per process)
    import httpx

_ACCEPT = ", ".join(sorted(hub.MANIFEST_MEDIA_TYPES))
_NEXT = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")


@dataclass
class SyncReport:
    repositories: int = 0
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    tags_added: int = 0
    tags_updated: int = 0
    tags_removed: int = 0
    # tags whose platforms (OS/architecture per platform) were read from the registry, and
    # those whose manifest could not be read as an image (left for the page to try again)
    platforms_filled: int = 0
    platforms_unreadable: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class RegistryClient:
    """A minimal registry API client that authenticates with self-minted tokens."""

    def __init__(
        self, settings: Settings, signer: LoadedKey, *, base_url: str, http: httpx.Client
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.http = http

    def _token(self, access: list[dict[str, object]]) -> str:
        return tokens.mint(
            self.signer,
            issuer=self.settings.registry_issuer,
            audience=self.settings.registry_service,
            subject=SYNC_USERNAME,
            access=access,
            ttl=self.settings.registry_token_ttl,
        ).token

    def _get(
        self,
        url: str,
        access: list[dict[str, object]],
        method: str = "GET",
        *,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        """The registry's answer; 404 is returned to the caller, any other failure is a
        ServiceUnavailable that says where and what (one line for the operator)."""
        headers = {"Authorization": f"Bearer {self._token(access)}", "Accept": _ACCEPT}
        if content_type is not None:
            headers["Content-Type"] = content_type
        import httpx

        try:
            response = self.http.request(method, url, headers=headers, content=content)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ServiceUnavailable(
                f"the registry at {self.base_url} could not be reached: {reason}"
            ) from None
        if response.status_code >= 400 and response.status_code != 404:
            hint = " (does it trust this store's keys? see `store registry config`)"
            raise ServiceUnavailable(
                f"the registry at {self.base_url} answered {response.status_code} to "
                f"{method} {url.removeprefix(self.base_url)}"
                + (hint if response.status_code == 401 else "")
            )
        return response

    def catalog(self, page_size: int = 100) -> list[str]:
        access: list[dict[str, object]] = [
            {"type": "registry", "name": "catalog", "actions": ["*"]}
        ]
        url: str | None = f"{self.base_url}/v2/_catalog?n={page_size}"
        names: list[str] = []
        while url:
            response = self._get(url, access)
            if response.status_code == 404:
                raise ServiceUnavailable(f"{self.base_url} has no registry catalog (/v2/_catalog)")
            names.extend(response.json().get("repositories") or [])
            match = _NEXT.search(response.headers.get("link", ""))
            url = urljoin(self.base_url + "/", match.group(1)) if match else None
        return names

    def tags(self, name: str) -> list[str]:
        access: list[dict[str, object]] = [
            {"type": "repository", "name": name, "actions": ["pull"]}
        ]
        response = self._get(f"{self.base_url}/v2/{name}/tags/list", access)
        if response.status_code == 404:
            return []
        return list(response.json().get("tags") or [])

    def manifest(self, name: str, reference: str) -> tuple[str, str, int]:
        """(digest, media type, size) of a manifest, from a HEAD (not counted as a pull)."""
        access: list[dict[str, object]] = [
            {"type": "repository", "name": name, "actions": ["pull"]}
        ]
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"
        response = self._get(url, access, "HEAD")
        if response.status_code == 404:
            raise ServiceUnavailable(f"{name}:{reference} vanished from the registry; sync again")
        return (
            response.headers.get("docker-content-digest", ""),
            response.headers.get("content-type", "").split(";")[0],
            int(response.headers.get("content-length") or 0),
        )

    # --- writes with the operator's credential (delete, transfer) -------------------------

    @staticmethod
    def _access(name: str, *actions: str) -> list[dict[str, object]]:
        return [{"type": "repository", "name": name, "actions": list(actions)}]

    def manifest_body(self, name: str, reference: str) -> tuple[bytes, str, str] | None:
        """(body, media type, digest) of a manifest or image index; None if missing. The
        registry reports it as a pull by the store's own credential, which is not counted."""
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"
        response = self._get(url, self._access(name, "pull"))
        if response.status_code == 404:
            return None
        return (
            response.content,
            response.headers.get("content-type", "").split(";")[0],
            response.headers.get("docker-content-digest", ""),
        )

    def blob(self, name: str, digest: str) -> bytes | None:
        url = f"{self.base_url}/v2/{name}/blobs/{digest}"
        response = self._get(url, self._access(name, "pull"))
        return None if response.status_code == 404 else response.content

    def delete_manifest(self, name: str, digest: str) -> bool:
        """Delete a manifest (every tag pointing at it); False if it was already gone."""
        url = f"{self.base_url}/v2/{name}/manifests/{digest}"
        response = self._get(url, self._access(name, "delete"), "DELETE")
        return response.status_code != 404

    def copy_blob(self, source: str, dest: str, digest: str) -> None:
        """Make a blob of ``source`` available in ``dest``: a cross-repository mount, or an
        upload of its content when the registry does not mount it."""
        access = self._access(dest, "pull", "push") + self._access(source, "pull")
        url = f"{self.base_url}/v2/{dest}/blobs/uploads/?mount={digest}&from={source}"
        response = self._get(url, access, "POST")
        if response.status_code == 201:
            return
        content = self.blob(source, digest)
        if content is None or response.status_code != 202:
            raise ServiceUnavailable(f"the registry lost blob {digest} of {source}")
        location = urljoin(self.base_url + "/", response.headers.get("location", ""))
        separator = "&" if "?" in location else "?"
        self._get(
            f"{location}{separator}digest={digest}",
            access,
            "PUT",
            content=content,
            content_type="application/octet-stream",
        )

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> None:
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"
        access = self._access(name, "pull", "push")
        response = self._get(url, access, "PUT", content=body, content_type=media_type)
        if response.status_code == 404:
            raise ServiceUnavailable(f"the registry refused a manifest of {name}: {response.text}")

    def copy_manifest(self, source: str, dest: str, reference: str) -> str | None:
        """Copy a manifest (an image index with its platform manifests) and the blobs it
        references from ``source`` to ``dest`` under ``reference``; its digest, or None if
        ``source`` no longer has it."""
        found = self.manifest_body(source, reference)
        if found is None:
            return None
        body, media_type, digest = found
        document = json.loads(body)
        for child in document.get("manifests") or []:
            self.copy_manifest(source, dest, str(child["digest"]))
        blobs = [document.get("config"), *(document.get("layers") or [])]
        for blob in blobs:
            if isinstance(blob, dict) and isinstance(blob.get("digest"), str):
                self.copy_blob(source, dest, blob["digest"])
        self.put_manifest(dest, reference, body, media_type)
        return digest


def sync(session: Session, client: RegistryClient, *, prune: bool = False) -> SyncReport:
    """Make the hub match the registry. Repositories missing from the registry are removed
    (with their pull history) only with ``prune``."""
    report = SyncReport()
    names = [n for n in client.catalog() if valid_repository(n)]
    report.repositories = len(names)
    known = set(session.scalars(select(HubRepository.name)))
    for name in names:
        if name not in known:
            report.created.append(name)
        repo = hub.ensure_repository(session, name)  # also recomputes visibility
        _sync_tags(session, client, repo, report)
    if prune:
        for name in sorted(known - set(names)):
            session.execute(delete(HubRepository).where(HubRepository.name == name))
            report.removed.append(name)
    session.flush()
    return report


def _sync_tags(
    session: Session, client: RegistryClient, repo: HubRepository, report: SyncReport
) -> None:
    existing = {
        t.name: t for t in session.scalars(select(HubTag).where(HubTag.repository_id == repo.id))
    }
    remote = client.tags(repo.name)
    platforms: dict[str, list[details.Platform] | None] = {}
    for tag in remote:
        digest, media_type, size = client.manifest(repo.name, tag)
        current = existing.get(tag)
        if current is None:
            current = HubTag(
                repository_id=repo.id,
                name=tag,
                digest=digest,
                media_type=media_type,
                size=size,
                pushed_at=utcnow(),
                pushed_by="",
            )
            session.add(current)
            report.tags_added += 1
            if repo.last_pushed_at is None:
                repo.last_pushed_at = utcnow()
        elif current.digest != digest:
            current.digest, current.media_type, current.size = digest, media_type, size
            current.platforms = None
            report.tags_updated += 1
        if current.platforms is None and digest:
            if digest not in platforms:
                platforms[digest] = _platforms(client, repo.name, digest)
            current.platforms = platforms[digest]
            if current.platforms is None:
                report.platforms_unreadable += 1
            else:
                report.platforms_filled += 1
    for name, tag_row in existing.items():
        if name not in remote:
            session.delete(tag_row)
            report.tags_removed += 1
    session.flush()


def _platforms(client: RegistryClient, name: str, digest: str) -> list[details.Platform] | None:
    """The platforms of a tag's manifest or image index; None when the registry lost it or
    it is not an image (an unreachable registry fails the whole sync)."""
    try:
        return details.read_platforms(client, name, digest)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
