"""A multi-arch pull (image index, then the platform's manifest) counts as one pull."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.registry.test_events_config import MANIFEST, _event, _post, _repo

INDEX = "application/vnd.oci.image.index.v1+json"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def _get(
    media: str, *, addr: str = "10.0.0.1:4000", agent: str = "docker/27", at: str = "18"
) -> Any:
    event = _event("pull", "acme/multi", media=media)
    event["request"]["addr"] = addr
    event["request"]["useragent"] = agent
    event["timestamp"] = f"2026-11-28T17:42:{at}.5Z"
    return event


def _count(session: Session) -> int:
    repo = _repo(session, "acme/multi")
    return repo.pull_count if repo else 0


def test_index_and_platform_manifest_are_one_pull(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    # One pull: the index, then the platform manifest on another connection (port).
    assert _post(client, app, _get(INDEX), _get(MANIFEST, addr="10.0.0.1:4001")).status_code == 200
    assert _count(session) == 1
    # The same client pulls again: a new pair, a second pull.
    _post(client, app, _get(INDEX, at="30"))
    _post(client, app, _get(MANIFEST, at="31"))
    assert _count(session) == 2
    # Notifications out of order (platform manifest first) still pair up.
    _post(client, app, _get(MANIFEST, at="45"), _get(LIST, at="44"))
    assert _count(session) == 3


def test_different_clients_and_lone_manifests_count_each(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    _post(client, app, _get(INDEX, addr="10.0.0.1:1"), _get(MANIFEST, addr="10.0.0.2:1"))
    assert _count(session) == 2  # two clients: two pulls
    _post(client, app, _get(MANIFEST, agent="skopeo/1.9.3"), _get(MANIFEST, agent="skopeo/1.9.3"))
    assert _count(session) == 4  # single-arch manifests: one pull each
    # An index and a manifest more than a minute apart are two pulls.
    _post(client, app, _get(INDEX, agent="crane", at="00"))
    late = _get(MANIFEST, agent="crane")
    late["timestamp"] = "2026-11-28T17:44:30Z"
    _post(client, app, late)
    assert _count(session) == 6


def test_a_duplicate_notification_pairs_nothing(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    index, manifest = _get(INDEX), _get(MANIFEST)
    _post(client, app, index)
    _post(client, app, index)  # redelivered: skipped as a duplicate
    _post(client, app, manifest)
    _post(client, app, manifest)
    assert _count(session) == 1
