"""Accounts, organizations, memberships and access tokens, through the service layer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from store import security
from store.accounts import service
from store.db import utcnow
from store.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from tests.factories import PASSWORD, make_account, make_admin, make_org


def test_create_account_hashes_password_with_argon2id(session: Session) -> None:
    account = make_account(session, "alice")
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash
    assert service.authenticate(session, login="alice", password=PASSWORD).id == account.id
    assert (
        service.authenticate(session, login="ALICE@example.com", password=PASSWORD).id == account.id
    )


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("ab", "3 to 39"),
        ("Has Space", "lowercase"),
        ("-dash", "lowercase"),
        ("a..b", "lowercase"),
        ("admin", "reserved"),
        ("x" * 40, "3 to 39"),
    ],
)
def test_usernames_follow_the_registry_grammar(
    session: Session, username: str, message: str
) -> None:
    with pytest.raises(ValidationFailed, match=message):
        service.create_account(session, username=username, email="x@example.com", password=PASSWORD)


def test_uppercase_usernames_are_folded(session: Session) -> None:
    assert make_account(session, "MixedCase").username == "mixedcase"


def test_duplicate_username_and_email_conflict(session: Session) -> None:
    make_account(session, "bob")
    with pytest.raises(Conflict, match="taken"):
        service.create_account(
            session, username="bob", email="other@example.com", password=PASSWORD
        )
    with pytest.raises(Conflict, match="e-mail"):
        service.create_account(
            session, username="bobby", email="BOB@example.com", password=PASSWORD
        )


@pytest.mark.parametrize("bad", ["not-an-email", "a@b", "@example.com"])
def test_bad_email_rejected(session: Session, bad: str) -> None:
    with pytest.raises(ValidationFailed, match="e-mail"):
        service.create_account(session, username="carol", email=bad, password=PASSWORD)


def test_short_password_rejected(session: Session) -> None:
    with pytest.raises(ValidationFailed, match="at least 10"):
        service.create_account(session, username="dave", email="d@example.com", password="short")


def test_wrong_password_and_unknown_user_look_the_same(session: Session) -> None:
    make_account(session, "erin")
    with pytest.raises(Unauthorized) as wrong:
        service.authenticate(session, login="erin", password="wrong password!")
    with pytest.raises(Unauthorized) as unknown:
        service.authenticate(session, login="nobody", password="wrong password!")
    assert wrong.value.detail == unknown.value.detail


def test_disabled_account_cannot_log_in(session: Session) -> None:
    account = make_account(session, "frank")
    service.set_active(session, account=account, active=False, actor=None)
    with pytest.raises(Forbidden, match="disabled"):
        service.authenticate(session, login="frank", password=PASSWORD)


def test_password_change_bumps_epoch(session: Session) -> None:
    account = make_account(session, "gina")
    before = account.password_changed_at
    with pytest.raises(ValidationFailed, match="current password"):
        service.change_password(
            session, account=account, current="nope nope nope", new="another password"
        )
    service.change_password(session, account=account, current=PASSWORD, new="another password")
    assert account.password_changed_at > before
    assert service.authenticate(session, login="gina", password="another password")


def test_organization_namespace_rules(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner, "acme")
    assert service.role_of(session, owner, org) == "owner"
    with pytest.raises(Conflict):
        make_org(session, owner, "acme")
    with pytest.raises(ValidationFailed):
        make_org(session, owner, "Bad_Name!")
    with pytest.raises(ValidationFailed, match="reserved"):
        make_org(session, owner, "library")


def test_invitation_flow_and_roles(session: Session) -> None:
    owner = make_account(session)
    guest = make_account(session)
    stranger = make_account(session)
    org = make_org(session, owner)
    with pytest.raises(Forbidden):
        service.invite_member(
            session, org=org, actor=stranger, username=guest.username, role="editor", settings=None
        )
    invitation = service.invite_member(
        session, org=org, actor=owner, username=guest.username, role="editor", settings=None
    )
    assert service.pending_invitations(session, guest) == [invitation]
    with pytest.raises(NotFound):
        service.answer_invitation(
            session, invitation_id=invitation.id, account=stranger, accept=True
        )
    service.answer_invitation(session, invitation_id=invitation.id, account=guest, accept=True)
    assert service.role_of(session, guest, org) == "editor"
    assert service.has_role(session, guest, org, "viewer")
    assert not service.has_role(session, guest, org, "owner")
    with pytest.raises(Conflict, match="already answered"):
        service.answer_invitation(session, invitation_id=invitation.id, account=guest, accept=False)
    with pytest.raises(Conflict, match="already a member"):
        service.invite_member(
            session, org=org, actor=owner, username=guest.username, role="viewer", settings=None
        )


def test_last_owner_cannot_leave_or_be_demoted(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    with pytest.raises(Conflict, match="at least one owner"):
        service.change_role(session, org=org, actor=owner, username=owner.username, role="viewer")
    with pytest.raises(Conflict, match="at least one owner"):
        service.remove_member(session, org=org, actor=owner, username=owner.username)


def test_admins_verify_publishers(session: Session) -> None:
    owner = make_account(session)
    admin = make_admin(session)
    org = make_org(session, owner)
    service.request_verification(session, org=org, actor=owner)
    assert org.verification_requested_at is not None
    with pytest.raises(Forbidden):
        service.set_verified(session, org=org, actor=owner, verified=True, settings=None)
    service.set_verified(
        session, org=org, actor=admin, verified=True, note="checked", settings=None
    )
    assert org.verified and org.verification_requested_at is None


def test_token_is_prefixed_checksummed_and_only_hashed(session: Session) -> None:
    account = make_account(session)
    issued = service.create_token(
        session, kind="personal", name="laptop", scopes=["pull", "api"], created_by=account
    )
    assert issued.secret.startswith("stp_")
    assert security.token_kind(issued.secret) == "personal"
    assert issued.token.token_hash == security.hash_token(issued.secret)
    assert issued.secret not in (issued.token.prefix, issued.token.token_hash)
    assert service.resolve_token(session, issued.secret).id == issued.token.id  # type: ignore[union-attr]
    assert issued.token.last_used_at is None  # resolving only reads
    now = utcnow()
    assert service.use_is_stale(issued.token, now)
    service.touch_token(session, token_id=issued.token.id, now=now)
    service.touch_token(session, token_id=issued.token.id, now=now + timedelta(seconds=30))
    session.refresh(issued.token)
    assert issued.token.last_used_at == now  # once per resolution, not on every use
    assert not service.use_is_stale(issued.token, now + timedelta(seconds=30))
    tampered = issued.secret[:-1] + ("A" if issued.secret[-1] != "A" else "B")
    assert service.resolve_token(session, tampered) is None


def test_token_expiry_and_revocation(session: Session) -> None:
    account = make_account(session)
    issued = service.create_token(
        session,
        kind="personal",
        name="ci",
        scopes=["pull"],
        created_by=account,
        expires_at=utcnow() + timedelta(hours=1),
    )
    issued.token.expires_at = utcnow() - timedelta(seconds=1)
    assert service.resolve_token(session, issued.secret) is None
    issued.token.expires_at = None
    assert service.resolve_token(session, issued.secret) is not None
    service.revoke_token(session, token=issued.token, actor=account)
    assert service.resolve_token(session, issued.secret) is None


def test_token_scopes_validated(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    with pytest.raises(ValidationFailed, match="Unknown scope"):
        service.create_token(session, kind="personal", name="x", scopes=["admin"], created_by=owner)
    with pytest.raises(ValidationFailed, match="Unknown scope api"):
        service.create_token(
            session, kind="robot", name="x", scopes=["api"], created_by=owner, org=org
        )
    with pytest.raises(ValidationFailed, match="at least one"):
        service.create_token(session, kind="personal", name="x", scopes=[], created_by=owner)
    with pytest.raises(ValidationFailed, match="future"):
        service.create_token(
            session,
            kind="personal",
            name="x",
            scopes=["pull"],
            created_by=owner,
            expires_at=utcnow() - timedelta(days=1),
        )


def test_robot_tokens_belong_to_the_org_and_need_an_owner(session: Session) -> None:
    owner = make_account(session)
    editor = make_account(session)
    org = make_org(session, owner)
    service.invite_member(
        session, org=org, actor=owner, username=editor.username, role="editor", settings=None
    )
    invitation = service.pending_invitations(session, editor)[0]
    service.answer_invitation(session, invitation_id=invitation.id, account=editor, accept=True)
    with pytest.raises(Forbidden):
        service.create_token(
            session, kind="robot", name="ci", scopes=["push"], created_by=editor, org=org
        )
    issued = service.create_token(
        session, kind="robot", name="ci", scopes=["pull", "push"], created_by=owner, org=org
    )
    assert issued.secret.startswith("str_")
    assert issued.token.organization_id == org.id and issued.token.account_id is None
    assert service.list_tokens(session, org=org) == [issued.token]


def test_tokens_of_disabled_accounts_stop_working(session: Session) -> None:
    account = make_account(session)
    issued = service.create_token(
        session, kind="personal", name="x", scopes=["pull"], created_by=account
    )
    service.set_active(session, account=account, active=False, actor=None)
    assert service.resolve_token(session, issued.secret) is None
