"""The visibility new repositories get, set per namespace on /my/repositories (browser-free):
the account's own namespace and its organizations' where it is an owner; bad input stays
beside its field, another's namespace is refused, nothing changes without the CSRF token."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Namespace
from store.registry import hub
from tests.factories import make_account, make_admin, make_org
from tests.web.helpers import login, submit

PAGE = "/my/repositories"
ACTION = "/my/repositories/defaults"


def _default(session: Session, name: str) -> str:
    session.expire_all()
    row = session.get(Namespace, name)
    assert row is not None
    return row.default_visibility


def test_owners_set_the_default_visibility_of_their_namespaces(
    client: TestClient, session: Session
) -> None:
    alice, bob = make_account(session, "alice"), make_account(session, "bob")
    make_org(session, alice, "acme")
    bobs = make_org(session, bob, "bobco")
    admin = make_admin(session)
    accounts.add_member(session, org=bobs, actor=admin, account=alice, role="editor")
    session.commit()
    login(client, "alice")

    page = client.get(PAGE)
    assert page.status_code == 200 and "New repositories in your namespaces" in page.text
    assert 'id="defaults-alice-default_visibility"' in page.text
    assert 'id="defaults-acme-default_visibility"' in page.text
    assert "defaults-bobco" not in page.text  # an editor there, not an owner

    bad = submit(client, PAGE, ACTION, {"namespace": "acme", "default_visibility": "hidden"})
    assert bad.status_code == 422
    assert "Visibility must be one of private, public" in bad.text
    assert 'id="defaults-acme-default_visibility-error"' in bad.text
    assert _default(session, "acme") == "private"

    saved = submit(client, PAGE, ACTION, {"namespace": "acme", "default_visibility": "public"})
    assert saved.status_code == 200, saved.text
    assert "New repositories in acme/ are public." in saved.text
    assert _default(session, "acme") == "public" and _default(session, "alice") == "private"
    # what the default is for: a repository made now (e.g. by a first push) is public
    assert hub.ensure_repository(session, "acme/new-app").visibility == "public"
    assert hub.ensure_repository(session, "alice/new-app").visibility == "private"

    refused = submit(client, PAGE, ACTION, {"namespace": "bobco", "default_visibility": "public"})
    assert refused.status_code == 403 and "bobco" in refused.text
    assert 'role="alert"' in refused.text and _default(session, "bobco") == "private"
    missing = submit(client, PAGE, ACTION, {"namespace": "nobody", "default_visibility": "public"})
    assert missing.status_code == 422 and "No namespace &#39;nobody&#39;" in missing.text

    forged = client.post(ACTION, data={"namespace": "alice", "default_visibility": "public"})
    assert forged.status_code in (400, 403)
    assert _default(session, "alice") == "private"


def test_the_api_names_the_field_of_a_bad_default(client: TestClient, session: Session) -> None:
    from tests.factories import api_token, auth

    alice = make_account(session, "alice")
    token = api_token(session, alice)
    session.commit()
    answer = client.put(
        "/api/v1/namespaces/alice/defaults",
        json={"default_visibility": "hidden"},
        headers=auth(token),
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "bad_visibility"
    assert answer.json()["field"] == "default_visibility"
