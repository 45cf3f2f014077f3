"""JSON API: sign-up, API tokens, the caller's account, organizations and members."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter, Request, status
from sqlalchemy.orm import Session

from store import ratelimit
from store.accounts import links, service, sessions, two_factor
from store.accounts import login as password_login
from store.accounts.caller import AdminAccount, Caller, CurrentAccount
from store.accounts.models import AccessToken, Account, Organization
from store.accounts.schemas import (
    AccountAdminUpdate,
    AccountOut,
    EmailChange,
    EmailChangeAsked,
    InvitationOut,
    InviteIn,
    LinkToken,
    Login,
    MemberOut,
    MeOut,
    MyOrg,
    OrgCreate,
    OrgOut,
    OrgUpdate,
    PasswordChange,
    RoleIn,
    SessionOut,
    SessionsEnded,
    SignUp,
    TokenCreate,
    TokenIssued,
    TokenOut,
    VerificationDecision,
)
from store.db import utcnow
from store.deps import DbSession, SettingsDep
from store.errors import Forbidden, NotFound
from store.security_headers import NO_STORE

router = APIRouter(tags=["accounts"])


def _issued(issued: service.IssuedToken) -> TokenIssued:
    return TokenIssued.model_validate(
        {**TokenOut.model_validate(issued.token).model_dump(), "token": issued.secret}
    )


def _expiry(days: int | None) -> datetime | None:
    return utcnow() + timedelta(days=days) if days else None


@router.post("/accounts", status_code=status.HTTP_201_CREATED, response_model=AccountOut)
def sign_up(body: SignUp, request: Request, session: DbSession) -> object:
    """Create an account. Usernames are lowercase registry account names. Sign-ups are
    limited per address (429 with Retry-After)."""
    wait = ratelimit.signup_wait(session, request)
    if wait is not None:
        raise ratelimit.too_many(wait, "sign-ups")
    session.commit()  # the attempt counts even when the sign-up is refused
    account = service.create_account(
        session,
        username=body.username,
        email=body.email,
        password=body.password,
        display_name=body.display_name,
    )
    links.send_verification(session, settings=request.app.state.settings, account=account)
    return account


@router.post(
    "/auth/token",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenIssued,
    dependencies=[NO_STORE],
)
async def log_in(body: Login, request: Request) -> TokenIssued:
    """Exchange a username (or e-mail) and password for a personal access token with the
    `api` and `pull` scopes. Attempts are limited per account name and per address, and
    password checks per server (429 with Retry-After)."""

    def make_token(session: Session, account: Account) -> TokenIssued:
        if two_factor.enabled(account):
            # A password alone is not enough for this account (and the API has no code step).
            raise Forbidden(
                "This account uses two-factor sign-in: create a personal access token on the "
                "web (Account, Access tokens) instead of logging in with the password",
                code="two_factor_required",
            )
        issued = service.create_token(
            session,
            kind="personal",
            name=body.token_name,
            scopes=["api", "pull"],
            created_by=account,
            expires_at=_expiry(body.expires_in_days),
        )
        return _issued(issued)

    return await password_login.log_in(
        request, login=body.login, password=body.password, via="api", then=make_token
    )


@router.get("/me", response_model=MeOut)
def me(account: CurrentAccount, session: DbSession) -> MeOut:
    """The calling account and the organizations it belongs to."""
    orgs = service.organizations_of(session, account)
    return MeOut(
        account=AccountOut.model_validate(account),
        organizations=[MyOrg(organization=OrgOut.model_validate(o), role=r) for o, r in orgs],
    )


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(
    body: PasswordChange, request: Request, account: CurrentAccount, session: DbSession
) -> None:
    """Change the password; sessions and cached credential checks made before stop working.
    Wrong current passwords are limited as failed log-ins are (429 with Retry-After)."""
    with password_login.password_attempt(request, session, account):
        service.change_password(
            session, account=account, current=body.current_password, new=body.new_password
        )


@router.post("/me/email", status_code=status.HTTP_202_ACCEPTED, response_model=EmailChangeAsked)
def change_email(
    body: EmailChange, request: Request, account: CurrentAccount, session: DbSession
) -> EmailChangeAsked:
    """Ask to change the address (with the current password): a link goes to the new
    address, a notice to the current one; the address changes when the link is used
    (``POST /confirm-email``). Limited like every link by e-mail (429 with Retry-After)."""
    address = body.email.strip().lower()
    wait = ratelimit.mail_link_wait(session, request, address)
    if wait is not None:
        raise ratelimit.too_many(wait, "requests for a link")
    session.commit()  # the request counts even when it is refused
    new = links.request_email_change(
        session,
        settings=request.app.state.settings,
        account=account,
        new_address=address,
        password=body.password,
    )
    return EmailChangeAsked(
        pending_email=new,
        detail=f"A link is on its way to {new}; the address changes when it is used.",
    )


@router.post("/confirm-email", response_model=AccountOut)
def confirm_email(body: LinkToken, request: Request, session: DbSession) -> object:
    """Use a change-of-address link's token (the token is the authority: no log-in)."""
    return links.confirm_email_change(
        session, settings=request.app.state.settings, token=body.token
    )


@router.post("/verify-email", response_model=AccountOut)
def verify_email(body: LinkToken, session: DbSession) -> object:
    """Use a verification link's token: the account's address is confirmed."""
    return links.verify_email(session, token=body.token)


@router.get("/me/tokens", response_model=list[TokenOut])
def my_tokens(account: CurrentAccount, session: DbSession) -> object:
    return service.list_tokens(session, account=account)


@router.post(
    "/me/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenIssued,
    dependencies=[NO_STORE],
)
def create_my_token(
    body: TokenCreate, account: CurrentAccount, caller: Caller, session: DbSession
) -> TokenIssued:
    """Create a personal access token. `pull`/`push` work as the password of `docker login`;
    `api` works for this API. The secret is in the response only. It has at most the scopes
    of the token used (403 `insufficient_scope`) and expires no later than it."""
    issued = service.create_token(
        session,
        kind="personal",
        name=body.name,
        scopes=list(body.scopes),
        created_by=account,
        expires_at=_expiry(body.expires_in_days),
        via=caller.token,
    )
    return _issued(issued)


def _own_token(
    session: DbSession, token_id: uuid.UUID, *, org: Organization | None, account_id: uuid.UUID
) -> AccessToken:
    token = session.get(AccessToken, token_id)
    if token is None:
        raise NotFound("No such token")
    if org is not None and token.organization_id != org.id:
        raise NotFound("No such token")
    if org is None and token.account_id != account_id:
        raise NotFound("No such token")
    return token


@router.delete("/me/tokens/{token_id}", response_model=TokenOut)
def revoke_my_token(token_id: uuid.UUID, account: CurrentAccount, session: DbSession) -> object:
    """Revoke a personal access token, with every token made from it: the tokens created
    with it through this API (personal and robot) and theirs, and its registry log-ins'
    refresh tokens."""
    token = _own_token(session, token_id, org=None, account_id=account.id)
    return service.revoke_token(session, token=token, actor=account)


@router.get("/me/sessions", response_model=list[SessionOut], dependencies=[NO_STORE])
def my_sessions(request: Request, account: CurrentAccount, session: DbSession) -> object:
    """Where this account is logged in with a browser: its live web sessions, most recently
    used first (the same list as the page /my/sessions)."""
    return sessions.active_sessions(
        session, account, lifetimes=sessions.Lifetimes.of(request.app.state.settings)
    )


@router.delete("/me/sessions/{session_id}", response_model=SessionOut)
def end_my_session(session_id: uuid.UUID, account: CurrentAccount, session: DbSession) -> object:
    """End one web session of this account: that browser is logged out at its next
    request. Ending an ended session changes nothing; another account's is a 404."""
    record = sessions.get_session_record(session, session_id)
    if record.account_id != account.id:  # administrators too: /me is the caller's own
        raise NotFound("No such session")
    return sessions.end_by(session, record=record, actor=account)


@router.delete("/me/sessions", response_model=SessionsEnded)
def end_my_sessions(account: CurrentAccount, session: DbSession) -> SessionsEnded:
    """Log out everywhere: end every web session of this account (API tokens are not
    sessions; revoke them under /me/tokens)."""
    return SessionsEnded(ended=sessions.end_all_sessions(session, account, reason="ended"))


@router.get("/me/invitations", response_model=list[InvitationOut])
def my_invitations(account: CurrentAccount, session: DbSession) -> object:
    return service.pending_invitations(session, account)


@router.post("/me/invitations/{invitation_id}/accept", response_model=InvitationOut)
def accept_invitation(
    invitation_id: uuid.UUID, account: CurrentAccount, session: DbSession
) -> object:
    return service.answer_invitation(
        session, invitation_id=invitation_id, account=account, accept=True
    )


@router.post("/me/invitations/{invitation_id}/decline", response_model=InvitationOut)
def decline_invitation(
    invitation_id: uuid.UUID, account: CurrentAccount, session: DbSession
) -> object:
    return service.answer_invitation(
        session, invitation_id=invitation_id, account=account, accept=False
    )


@router.get("/orgs", response_model=list[OrgOut], tags=["organizations"])
def list_orgs(session: DbSession, verified: bool | None = None) -> object:
    """Every publisher; filter with `verified=true|false`."""
    return service.list_organizations(session, verified=verified)


@router.post(
    "/orgs", status_code=status.HTTP_201_CREATED, response_model=OrgOut, tags=["organizations"]
)
def create_org(body: OrgCreate, account: CurrentAccount, session: DbSession) -> object:
    """Create a publisher organization; its slug becomes the registry namespace and the
    caller its first owner."""
    return service.create_organization(
        session,
        owner=account,
        slug=body.slug,
        name=body.name,
        description=body.description,
        website=body.website,
    )


@router.get("/orgs/{slug}", response_model=OrgOut, tags=["organizations"])
def get_org(slug: str, session: DbSession) -> object:
    return service.get_organization(session, slug)


@router.patch("/orgs/{slug}", response_model=OrgOut, tags=["organizations"])
def update_org(slug: str, body: OrgUpdate, account: CurrentAccount, session: DbSession) -> object:
    org = service.get_organization(session, slug)
    return service.update_organization(
        session, org=org, actor=account, **body.model_dump(exclude_unset=True)
    )


@router.get("/orgs/{slug}/members", response_model=list[MemberOut], tags=["organizations"])
def list_members(slug: str, account: CurrentAccount, session: DbSession) -> list[MemberOut]:
    org = service.get_organization(session, slug)
    service.require_role(session, account, org, "viewer")
    return [
        MemberOut(
            username=m.account.username,
            display_name=m.account.display_name,
            role=m.role,
            since=m.created_at,
        )
        for m in service.members(session, org)
    ]


@router.post(
    "/orgs/{slug}/invitations", status_code=status.HTTP_201_CREATED, tags=["organizations"]
)
def invite(
    slug: str, body: InviteIn, account: CurrentAccount, session: DbSession, settings: SettingsDep
) -> dict[str, object]:
    """Invite an existing account by username; it joins when it accepts."""
    org = service.get_organization(session, slug)
    invitation = service.invite_member(
        session,
        org=org,
        actor=account,
        username=body.username,
        role=body.role,
        settings=settings,
    )
    return {
        "id": str(invitation.id),
        "username": invitation.account.username,
        "role": invitation.role,
    }


@router.put("/orgs/{slug}/members/{username}", response_model=MemberOut, tags=["organizations"])
def change_role(
    slug: str, username: str, body: RoleIn, account: CurrentAccount, session: DbSession
) -> MemberOut:
    org = service.get_organization(session, slug)
    m = service.change_role(session, org=org, actor=account, username=username, role=body.role)
    return MemberOut(
        username=m.account.username,
        display_name=m.account.display_name,
        role=m.role,
        since=m.created_at,
    )


@router.delete(
    "/orgs/{slug}/members/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["organizations"],
)
def remove_member(slug: str, username: str, account: CurrentAccount, session: DbSession) -> None:
    org = service.get_organization(session, slug)
    service.remove_member(session, org=org, actor=account, username=username)


@router.post("/orgs/{slug}/verification", response_model=OrgOut, tags=["organizations"])
def request_verification(slug: str, account: CurrentAccount, session: DbSession) -> object:
    """Ask the store's administrators to verify this publisher."""
    org = service.get_organization(session, slug)
    return service.request_verification(session, org=org, actor=account)


@router.get("/orgs/{slug}/tokens", response_model=list[TokenOut], tags=["organizations"])
def list_robot_tokens(slug: str, account: CurrentAccount, session: DbSession) -> object:
    org = service.get_organization(session, slug)
    service.require_role(session, account, org, "owner")
    return service.list_tokens(session, org=org)


@router.post(
    "/orgs/{slug}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenIssued,
    tags=["organizations"],
    dependencies=[NO_STORE],
)
def create_robot_token(
    slug: str, body: TokenCreate, account: CurrentAccount, caller: Caller, session: DbSession
) -> TokenIssued:
    """A robot token for CI: `pull` and/or `push` on this organization's namespace; at most
    the scopes of the token used (403 `insufficient_scope`), expiring no later than it."""
    org = service.get_organization(session, slug)
    issued = service.create_token(
        session,
        kind="robot",
        name=body.name,
        scopes=list(body.scopes),
        created_by=account,
        org=org,
        expires_at=_expiry(body.expires_in_days),
        via=caller.token,
    )
    return _issued(issued)


@router.delete("/orgs/{slug}/tokens/{token_id}", response_model=TokenOut, tags=["organizations"])
def revoke_robot_token(
    slug: str, token_id: uuid.UUID, account: CurrentAccount, session: DbSession
) -> object:
    """Revoke a robot token, with every token made from it (its registry log-ins' refresh
    tokens, and tokens created with it through this API)."""
    org = service.get_organization(session, slug)
    service.require_role(session, account, org, "owner")
    token = _own_token(session, token_id, org=org, account_id=account.id)
    return service.revoke_token(session, token=token, actor=account)


@router.get("/admin/accounts", response_model=list[AccountOut], tags=["admin"])
def admin_accounts(admin: AdminAccount, session: DbSession, q: str = "") -> object:
    return service.list_accounts(session, query=q[:100])


@router.patch("/admin/accounts/{username}", response_model=AccountOut, tags=["admin"])
def admin_update_account(
    username: str, body: AccountAdminUpdate, admin: AdminAccount, session: DbSession
) -> object:
    account = service.get_account_by_username(session, username)
    if body.is_admin is not None:
        service.set_admin(session, account=account, is_admin=body.is_admin, actor=admin)
    if body.is_active is not None:
        service.set_active(session, account=account, active=body.is_active, actor=admin)
    return account


@router.post("/admin/orgs/{slug}/verification", response_model=OrgOut, tags=["admin"])
def admin_verify(
    slug: str,
    body: VerificationDecision,
    admin: AdminAccount,
    session: DbSession,
    settings: SettingsDep,
) -> object:
    """Approve (verified badge) or reject a publisher, with a note."""
    org = service.get_organization(session, slug)
    return service.set_verified(
        session, org=org, actor=admin, verified=body.verified, note=body.note, settings=settings
    )
