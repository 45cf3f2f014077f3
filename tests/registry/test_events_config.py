"""Registry notifications, pull history, the registry config writer and the keys CLI."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.idempotency import ProcessedEvent
from store.keys import crypto
from store.keys import service as keys
from store.registry import config as registry_config
from store.registry import events, hub
from store.registry.models import HubRepository, HubTag
from tests.factories import make_account, make_org, make_product, paid_tier

MEDIA = events.MEDIA_TYPE
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _event(
    action: str,
    repo: str,
    *,
    method: str = "GET",
    media: str = MANIFEST,
    tag: str | None = "v1",
    event_id: str | None = None,
    digest: str = "sha256:" + "a" * 64,
) -> dict[str, Any]:
    target: dict[str, Any] = {
        "mediaType": media,
        "size": 401,
        "digest": digest,
        "length": 401,
        "repository": repo,
        "url": f"http://r/v2/{repo}/manifests/{digest}",
    }
    if tag:
        target["tag"] = tag
    return {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": "2026-11-28T17:42:18.681590636Z",
        "action": action,
        "target": target,
        "request": {
            "id": "x",
            "addr": "127.0.0.1:1",
            "host": "r",
            "method": method,
            "useragent": "skopeo/1.9.3",
        },
        "actor": {"name": "robot:acme:str_abc"},
        "source": {"addr": "vm:5000", "instanceID": "i"},
    }


def _post(
    client: TestClient,
    app: FastAPI,
    *evts: dict[str, Any],
    auth: str | None = None,
    media: str = MEDIA,
):
    secret = app.state.settings.resolved_notify_secret
    import json

    return client.post(
        "/registry/events",
        content=json.dumps({"events": list(evts)}),
        headers={
            "Content-Type": media,
            "Authorization": auth if auth is not None else f"Bearer {secret}",
        },
    )


def _repo(session: Session, name: str) -> HubRepository | None:
    session.expire_all()
    return session.scalar(select(HubRepository).where(HubRepository.name == name))


def test_events_need_the_shared_secret_and_media_type(client: TestClient, app: FastAPI) -> None:
    assert _post(client, app, _event("push", "acme/app"), auth="Bearer nope").status_code == 401
    assert _post(client, app, _event("push", "acme/app"), auth="").status_code == 401
    assert _post(client, app, _event("push", "acme/app"), media="text/plain").status_code == 415
    secret = app.state.settings.resolved_notify_secret
    bad = client.post(
        "/registry/events",
        content=b"{not json",
        headers={"Content-Type": MEDIA, "Authorization": f"Bearer {secret}"},
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_push_creates_repository_and_tag(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    alice = make_account(session)
    acme = make_org(session, alice, "acme")
    make_product(session, acme, alice, "app", tiers=[paid_tier()])
    session.commit()
    blob = _event("push", "acme/app", media="application/octet-stream", tag=None)
    response = _post(
        client, app, blob, _event("push", "acme/app"), _event("push", "acme/tools", tag="latest")
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"processed": 2, "duplicates": 0, "ignored": 1}
    app_repo = _repo(session, "acme/app")
    assert app_repo is not None and app_repo.private is True and app_repo.namespace == "acme"
    assert app_repo.last_pushed_at is not None and app_repo.last_pushed_at.year == 2026
    tag = session.scalar(select(HubTag).where(HubTag.repository_id == app_repo.id))
    assert tag is not None and (tag.name, tag.digest, tag.media_type, tag.size, tag.pushed_by) == (
        "v1",
        "sha256:" + "a" * 64,
        MANIFEST,
        401,
        "robot:acme:str_abc",
    )
    tools = _repo(session, "acme/tools")
    assert tools is not None and tools.private is True  # no product, not marked public
    # A new push of the tag moves it to the new digest.
    _post(client, app, _event("push", "acme/app", digest="sha256:" + "b" * 64))
    session.expire_all()
    tags = session.scalars(select(HubTag).where(HubTag.repository_id == app_repo.id)).all()
    assert [t.digest for t in tags] == ["sha256:" + "b" * 64]


def test_only_manifest_gets_count_and_duplicates_count_once(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    pull = _event("pull", "ns/app")
    response = _post(
        client,
        app,
        pull,
        pull,  # the same event twice in one envelope
        _event("pull", "ns/app", method="HEAD"),
        _event("pull", "ns/app", media="application/octet-stream", tag=None),
        _event("pull", "ns/app", tag=None),  # by digest: still a download
    )
    assert response.json() == {"processed": 2, "duplicates": 1, "ignored": 2}
    assert _post(client, app, pull).json() == {
        "processed": 0,
        "duplicates": 1,
        "ignored": 0,
    }  # retry
    repo = _repo(session, "ns/app")
    assert repo is not None and repo.pull_count == 2 and repo.last_pulled_at is not None
    history = hub.pull_history(session, name="ns/app", days=3)
    assert history.total == 2 and sum(c for _, c in history.days) in (0, 2)  # day is 2026-11-28
    count = session.scalar(select(ProcessedEvent).where(ProcessedEvent.event_id == pull["id"]))
    assert count is not None and count.source == "registry"


def test_malformed_events_are_ignored(client: TestClient, app: FastAPI) -> None:
    response = _post(
        client,
        app,
        {"id": "", "action": "push"},
        {"id": "x1", "action": "push", "target": {"repository": "Bad Name", "mediaType": MANIFEST}},
        {"id": "x2", "action": "push", "target": "nope"},
        {
            "id": "x3",
            "action": "mount",
            "target": {"repository": "ns/app", "mediaType": "application/octet-stream"},
        },
    )
    assert response.json() == {"processed": 0, "duplicates": 0, "ignored": 4}


def test_delete_events_remove_tags(client: TestClient, app: FastAPI, session: Session) -> None:
    _post(
        client,
        app,
        _event("push", "ns/app", tag="v1"),
        _event("push", "ns/app", tag="v2", digest="sha256:" + "c" * 64),
    )
    _post(
        client,
        app,
        {
            "id": "d1",
            "action": "delete",
            "target": {"repository": "ns/app", "tag": "v1"},
            "request": {},
        },
    )
    _post(
        client,
        app,
        {
            "id": "d2",
            "action": "delete",
            "target": {"repository": "ns/app", "digest": "sha256:" + "c" * 64},
            "request": {},
        },
    )
    repo = _repo(session, "ns/app")
    assert repo is not None
    assert session.scalars(select(HubTag).where(HubTag.repository_id == repo.id)).all() == []


def test_event_time_parsing() -> None:
    moment = events.parse_time("2026-11-28T17:42:18.681590636Z")
    assert (moment.microsecond, moment.tzinfo is not None) == (681590, True)
    assert events.parse_time("2026-11-28T17:42:18+02:00").hour == 15
    assert events.parse_time("garbage").tzinfo is not None


def test_pull_history_api_for_publishers_only(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    alice, bob = make_account(session), make_account(session)
    acme = make_org(session, alice, "acme")
    make_product(
        session, acme, alice, "app", tiers=[{"slug": "free", "billing": "free", "public": True}]
    )
    alice_token = accounts.create_token(
        session, kind="personal", name="a", scopes=["api"], created_by=alice
    ).secret
    bob_token = accounts.create_token(
        session, kind="personal", name="b", scopes=["api"], created_by=bob
    ).secret
    session.commit()
    _post(client, app, *(_event("pull", "acme/app") for _ in range(3)))
    response = client.get(
        "/api/v1/products/acme/app/pulls?days=7", headers={"Authorization": f"Bearer {alice_token}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["repository"] == "acme/app" and body["total"] == 3 and len(body["days"]) == 7
    assert (
        client.get(
            "/api/v1/products/acme/app/pulls", headers={"Authorization": f"Bearer {bob_token}"}
        ).status_code
        == 403
    )
    assert client.get("/api/v1/products/acme/app/pulls").status_code == 403


def test_visibility_follows_the_product(session: Session) -> None:
    alice = make_account(session)
    acme = make_org(session, alice, "acme")
    product = make_product(
        session, acme, alice, "app", tiers=[{"slug": "free", "billing": "free", "public": True}]
    )
    assert hub.ensure_repository(session, "acme/app").private is False
    catalog.create_tier(session, actor=alice, product=product, **paid_tier())
    session.refresh(product)
    hub.refresh_visibility(session, "acme/app")
    assert hub.get_repository(session, "acme/app").private is True  # type: ignore[union-attr]


def test_config_writer(session: Session, settings: Any, tmp_path: Path) -> None:
    written = registry_config.write(
        session, settings, registry_url="http://127.0.0.1:5999", out_dir=tmp_path / "reg"
    )
    cfg = yaml.safe_load(written.config_path.read_text())
    assert cfg["http"]["addr"] == "127.0.0.1:5999"
    assert cfg["auth"]["token"] == {
        "realm": "http://store.test/token",
        "service": "store-registry",
        "issuer": "store-token-issuer",
        "rootcertbundle": str(written.bundle_path),
    }
    endpoint = cfg["notifications"]["endpoints"][0]
    assert endpoint["url"] == "http://store.test/registry/events"
    assert endpoint["headers"]["Authorization"] == [f"Bearer {settings.resolved_notify_secret}"]
    assert cfg["notifications"]["events"]["includereferences"] is True
    assert oct(written.config_path.stat().st_mode & 0o777) == "0o600"
    certs = x509.load_pem_x509_certificates(written.bundle_path.read_bytes())
    assert [crypto.libtrust_kid(c.public_key()) for c in certs] == written.kids  # type: ignore[arg-type]
    # Rotation: the new key is published (in the bundle) before it signs.
    old = keys.current_key(session, "registry")
    new = keys.rotate(session, purpose="registry", secret=settings.resolved_secret_key)
    assert new.activated_at is None and keys.current_key(session, "registry").kid == old.kid  # type: ignore[union-attr]
    rewritten = registry_config.write(
        session, settings, registry_url="http://127.0.0.1:5999", out_dir=tmp_path / "reg"
    )
    assert set(rewritten.kids) == {old.kid, new.kid}  # type: ignore[union-attr]
    assert len(x509.load_pem_x509_certificates(rewritten.bundle_path.read_bytes())) == 2
