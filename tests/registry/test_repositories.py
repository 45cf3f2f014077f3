"""Hub repositories as first-class objects: the JSON API, Docker Hub's v2 shapes, stars,
and the pages /r/<namespace>/<name> (the registry parts, delete and transfer, are in
tests/e2e/test_hub_e2e.py)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.db import utcnow
from store.registry import hub
from store.registry.models import HubRepository, HubTag
from tests.factories import PASSWORD, make_account, make_org, make_product


def _bearer(session: Session, account: object) -> dict[str, str]:
    secret = accounts.create_token(
        session, kind="personal", name="api", scopes=["api"], created_by=account
    ).secret  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {secret}"}


def _push(session: Session, name: str, tag: str, digest: str, by: str, minutes: int = 0) -> None:
    hub.record_push(
        session,
        name=name,
        digest=digest,
        media_type="application/vnd.oci.image.index.v1+json",
        size=500,
        tag=tag,
        actor=by,
        at=utcnow() - timedelta(minutes=minutes),
    )
    row = session.scalar(
        select(HubTag).join(HubRepository).where(HubRepository.name == name, HubTag.name == tag)
    )
    assert row is not None
    row.platforms = [
        {"os": "linux", "architecture": "amd64", "variant": "", "digest": "sha256:" + "a" * 64,
         "size": 2_500_000},
        {"os": "linux", "architecture": "arm64", "variant": "v8", "digest": "sha256:" + "b" * 64,
         "size": 2_400_000},
    ]  # fmt: skip
    session.flush()


def _login(client: TestClient, username: str) -> None:
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    done = client.post(
        "/login",
        data={"login": username, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text


def _csrf(client: TestClient, path: str) -> str:
    return client.get(path).text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def test_create_read_change_through_the_api(client: TestClient, session: Session) -> None:
    alice, bob = make_account(session, "alice"), make_account(session, "bob")
    a, b = _bearer(session, alice), _bearer(session, bob)
    session.commit()
    created = client.post(
        "/api/v1/repositories",
        json={"name": "alice/app", "description": "An app", "readme": "# Hi\n<script>x</script>"},
        headers=a,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["repository"], body["visibility"], body["is_private"]) == (
        "alice/app",
        "private",
        True,
    )
    assert body["permission"] == "owner"
    assert "<h1>Hi</h1>" in body["readme_html"] and "<script" not in body["readme_html"]
    assert body["page_url"] == "http://store.test/r/alice/app"
    assert body["pull_command"] == "docker pull 127.0.0.1:5000/alice/app"
    # Errors are clear; nobody creates in someone else's namespace.
    again = client.post("/api/v1/repositories", json={"name": "alice/app"}, headers=a)
    assert (again.status_code, again.json()["error"]) == (409, "repository_exists")
    bad = client.post("/api/v1/repositories", json={"name": "Alice/App!"}, headers=a)
    assert (bad.status_code, bad.json()["error"]) == (422, "bad_repository")
    long = client.post(
        "/api/v1/repositories", json={"name": "alice/x", "description": "d" * 301}, headers=a
    )
    assert (long.status_code, long.json()["error"]) == (422, "bad_description")
    assert (
        client.post("/api/v1/repositories", json={"name": "alice/y"}, headers=b).status_code == 403
    )
    assert (
        client.post("/api/v1/repositories", json={"name": "nobody/y"}, headers=b).status_code == 404
    )

    # Private: the same 404 as a repository that does not exist, for others and anonymous.
    missing = client.get("/api/v1/repositories/alice/none", headers=b)
    for headers in (b, {}):
        hidden = client.get("/api/v1/repositories/alice/app", headers=headers)
        assert hidden.status_code == 404
        assert hidden.json()["detail"].replace("app", "none") == missing.json()["detail"]
        assert client.get("/r/alice/app", headers=headers).status_code == 404
        assert client.get("/v2/repositories/alice/app/tags", headers=headers).status_code == 404

    changed = client.patch(
        "/api/v1/repositories/alice/app",
        json={"visibility": "public", "readme": "Use **it**"},
        headers=a,
    )
    assert changed.status_code == 200 and changed.json()["is_private"] is False
    assert client.get("/api/v1/repositories/alice/app").json()["readme_html"] == (
        "<p>Use <strong>it</strong></p>\n"
    )
    assert (
        client.patch(
            "/api/v1/repositories/alice/app", json={"description": "x"}, headers=b
        ).status_code
        == 403
    )

    # Collaborators through the API feed the rule: bob may now push.
    put = client.put(
        "/api/v1/repositories/alice/app/collaborators/bob", json={"permission": "write"}, headers=a
    )
    assert put.json() == {"username": "bob", "permission": "write"}
    listed = client.get("/api/v1/repositories/alice/app/collaborators", headers=b)
    assert listed.json() == [{"username": "bob", "permission": "write"}]
    assert client.get("/api/v1/repositories/alice/app", headers=b).json()["permission"] == "write"
    gone = client.delete("/api/v1/repositories/alice/app/collaborators/bob", headers=a)
    assert gone.status_code == 204

    # A namespace's default visibility.
    defaults = client.put(
        "/api/v1/namespaces/alice/defaults", json={"default_visibility": "public"}, headers=a
    )
    assert defaults.json() == {
        "namespace": "alice",
        "kind": "user",
        "default_visibility": "public",
    }
    assert (
        client.put(
            "/api/v1/namespaces/alice/defaults", json={"default_visibility": "public"}, headers=b
        ).status_code
        == 403
    )
    fresh = client.post("/api/v1/repositories", json={"name": "alice/open"}, headers=a)
    assert fresh.json()["visibility"] == "public"


def test_stars_count_once_and_only_for_those_who_see(client: TestClient, session: Session) -> None:
    alice, bob = make_account(session, "alice"), make_account(session, "bob")
    hub.set_visibility(session, name="alice/app", visibility="public")
    hub.ensure_repository(session, "alice/secret")
    a, b = _bearer(session, alice), _bearer(session, bob)
    session.commit()
    for _ in range(2):
        starred = client.put("/api/v1/repositories/alice/app/star", headers=b)
        assert starred.status_code == 200
        assert (starred.json()["star_count"], starred.json()["starred"]) == (1, True)
    assert client.put("/api/v1/repositories/alice/app/star", headers=a).json()["star_count"] == 2
    assert client.put("/api/v1/repositories/alice/app/star").status_code == 401
    assert client.put("/api/v1/repositories/alice/secret/star", headers=b).status_code == 404
    unstarred = client.delete("/api/v1/repositories/alice/app/star", headers=b)
    assert (unstarred.json()["star_count"], unstarred.json()["starred"]) == (1, False)
    assert client.delete("/api/v1/repositories/alice/app/star", headers=b).json()["star_count"] == 1
    # docker search and the search API show the stars.
    docker = client.get("/v1/search", params={"q": "app"}).json()
    assert [(r["name"], r["star_count"]) for r in docker["results"]] == [("alice/app", 1)]


def test_repository_page_and_docker_hub_shapes(client: TestClient, session: Session) -> None:
    make_account(session, "alice")
    make_account(session, "bob")
    hub.set_visibility(session, name="alice/app", visibility="public")
    repo = hub.ensure_repository(session, "alice/app")
    repo.description = "A small app"
    repo.readme_md = "## Usage\n\n[site](javascript:alert(1)) <img src=x onerror=alert(1)>"
    _push(session, "alice/app", "1.0", "sha256:" + "1" * 64, "alice", minutes=5)
    _push(session, "alice/app", "latest", "sha256:" + "2" * 64, "alice")
    session.commit()

    page = client.get("/r/alice/app")
    assert page.status_code == 200
    text = page.text
    assert "<h2>Usage</h2>" in text and 'href="javascript:' not in text and "<img src=x" not in text
    assert "docker pull 127.0.0.1:5000/alice/app:latest" in text
    assert "sha256:" + "2" * 64 in text and "linux/arm64/v8" in text and "2.5 MB" in text
    assert "by alice" in text and "Pulls per day: alice/app" in text
    assert "Settings" not in text  # only for owners and admin collaborators

    tags = client.get("/v2/repositories/alice/app/tags", params={"page_size": 1}).json()
    assert tags["count"] == 2
    assert tags["next"] == "http://store.test/v2/repositories/alice/app/tags?page=2&page_size=1"
    first = tags["results"][0]
    assert (first["name"], first["full_size"], first["last_updater_username"]) == (
        "latest",
        2_500_000,
        "alice",
    )
    assert [(i["os"], i["architecture"], i["variant"]) for i in first["images"]] == [
        ("linux", "amd64", None),
        ("linux", "arm64", "v8"),
    ]
    shaped = client.get("/v2/repositories/alice/app").json()
    assert (shaped["namespace"], shaped["name"], shaped["is_private"]) == ("alice", "app", False)
    ours = client.get("/api/v1/repositories/alice/app/tags").json()
    assert [t["name"] for t in ours] == ["latest", "1.0"] and ours[0]["size"] == 2_500_000
    pulls = client.get("/api/v1/repositories/alice/app/pulls", params={"days": 7}).json()
    assert pulls["total"] == 0 and len(pulls["days"]) == 7

    # The owner sees the settings; a star from the page.
    _login(client, "alice")
    owner_page = client.get("/r/alice/app")
    assert 'href="/r/alice/app/settings"' in owner_page.text
    token = _csrf(client, "/r/alice/app")
    starred = client.post(
        "/r/alice/app/star", data={"action": "star", "csrf_token": token}, follow_redirects=False
    )
    assert starred.status_code == 303
    assert "★ Starred" in client.get("/r/alice/app").text
    settings = client.get("/r/alice/app/settings")
    assert settings.status_code == 200 and "Collaborators" in settings.text
    token = _csrf(client, "/r/alice/app/settings")
    saved = client.post(
        "/r/alice/app/settings",
        data={"description": "New words", "visibility": "public", "readme": "x",
              "csrf_token": token},
        follow_redirects=False,
    )  # fmt: skip
    assert saved.status_code == 303
    bad = client.post(
        "/r/alice/app/collaborators",
        data={"username": "nobody", "permission": "read", "csrf_token": token},
    )
    assert bad.status_code == 422 and "No account named" in bad.text
    ok = client.post(
        "/r/alice/app/collaborators",
        data={"username": "bob", "permission": "admin", "csrf_token": token},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    wrong = client.post("/r/alice/app/delete", data={"confirm": "nope", "csrf_token": token})
    assert wrong.status_code == 422 and "to confirm" in wrong.text


def test_create_from_the_web_and_list_mine(client: TestClient, session: Session) -> None:
    alice = make_account(session, "alice")
    make_org(session, alice, "acme")
    session.commit()
    _login(client, "alice")
    form = client.get("/repositories/new")
    assert 'value="acme"' in form.text and 'value="alice"' in form.text
    token = _csrf(client, "/repositories/new")
    bad = client.post(
        "/repositories/new", data={"namespace": "alice", "name": "", "csrf_token": token}
    )
    assert bad.status_code == 422
    made = client.post(
        "/repositories/new",
        data={"namespace": "acme", "name": "tools", "description": "Tools",
              "visibility": "private", "readme": "", "csrf_token": token},
        follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303 and made.headers["location"] == "/r/acme/tools"
    mine = client.get("/my/repositories")
    assert 'href="/r/acme/tools"' in mine.text


def test_product_and_repository_pages_link_each_other(client: TestClient, session: Session) -> None:
    owner = make_account(session, "olaf")
    acme = make_org(session, owner, "acme")
    make_product(session, acme, owner, "app", tiers=[{"slug": "free", "billing": "free"}])
    hub.ensure_repository(session, "acme/app")
    session.commit()
    product_page = client.get("/products/acme/app")
    assert 'href="/r/acme/app"' in product_page.text
    repo_page = client.get("/r/acme/app")  # a published listing: everyone sees it
    assert repo_page.status_code == 200 and 'href="/products/acme/app"' in repo_page.text


def test_search_and_browse_show_hub_repositories(client: TestClient, session: Session) -> None:
    owner = make_account(session, "olaf")
    acme = make_org(session, owner, "acme")
    acme.verified_at = utcnow()
    for name, pulls in (("acme/cache", 5), ("zoe/cache-one", 5), ("zoe/cache-two", 5)):
        repo = hub.ensure_repository(session, name)
        repo.description = "A cache"
        repo.pull_count = pulls
        hub.set_visibility(session, name=name, visibility="public")
    fans = [make_account(session, f"fan{i}") for i in range(3)]
    session.flush()
    from store.registry import stars

    for fan in fans:  # stars lift zoe/cache-two above zoe/cache-one
        stars.star(session, account=fan, name="zoe/cache-two")
    session.commit()

    found = client.get("/api/v1/search", params={"q": "cache", "source": "hub"}).json()
    hits = {h["name"]: h for h in found["results"]}
    assert hits["zoe/cache-two"]["url"] == "/r/zoe/cache-two"
    assert hits["zoe/cache-two"]["star_count"] == 3
    names = [h["name"] for h in found["results"]]
    assert names.index("zoe/cache-two") < names.index("zoe/cache-one")
    assert names[0] == "acme/cache"  # a verified publisher ranks first
    docker = client.get("/v1/search", params={"q": "cache"}).json()
    assert {r["name"]: r["star_count"] for r in docker["results"]}["zoe/cache-two"] == 3
    page = client.get("/search", params={"q": "cache"}).text
    assert 'href="/r/zoe/cache-two"' in page and "★ 3" in page

    browse = client.get("/browse", params={"source": "hub"})
    assert browse.status_code == 200 and "3 repositories" in browse.text
    assert 'href="/r/acme/cache"' in browse.text
    community = client.get("/browse", params={"source": "hub", "badge": "community"}).text
    assert 'href="/r/zoe/cache-one"' in community and 'href="/r/acme/cache"' not in community
    verified = client.get("/browse", params={"source": "hub", "badge": "verified"}).text
    assert 'href="/r/acme/cache"' in verified and 'href="/r/zoe/cache-one"' not in verified
    assert client.get("/browse", params={"source": "elsewhere"}).status_code == 400
