"""API shapes for accounts, organizations and tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

Scope = Literal["pull", "push", "api"]


class ORM(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SignUp(BaseModel):
    username: str = Field(max_length=64, examples=["alice"])
    email: str = Field(max_length=254, examples=["alice@example.com"])
    password: str = Field(max_length=256)
    display_name: str = Field(default="", max_length=120)


class AccountOut(ORM):
    id: uuid.UUID
    username: str
    email: str
    display_name: str
    is_admin: bool
    is_active: bool
    created_at: datetime
    email_verified_at: datetime | None = None


class PublicAccount(ORM):
    username: str
    display_name: str


class Login(BaseModel):
    login: str = Field(max_length=254, description="Username or e-mail address")
    password: str = Field(max_length=256)
    token_name: str = Field(default="API session", max_length=100)
    expires_in_days: int | None = Field(default=30, ge=1, le=3650)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


class TokenCreate(BaseModel):
    name: str = Field(max_length=100, examples=["laptop"])
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["pull"]))
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(ORM):
    id: uuid.UUID
    kind: str = Field(description="personal | robot | refresh (a registry log-in)")
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    client: str = Field(default="", description="refresh: the client that logged in")
    source: str | None = Field(
        default=None,
        validation_alias=AliasChoices("source_kind", "source"),
        description="refresh: what the log-in used (password | personal | license)",
    )


class SessionOut(ORM):
    """A browser log-in (a web session)."""

    id: uuid.UUID
    user_agent: str = Field(description="The browser that logged in, as it named itself")
    address: str = Field(description="The client address it logged in from")
    created_at: datetime = Field(description="When it logged in")
    last_seen_at: datetime = Field(description="Its last request (written every few minutes)")
    expires_at: datetime = Field(description="Its absolute end, however much it is used")
    ended_at: datetime | None = Field(description="When it was ended (log-out, ended here…)")
    end_reason: str = Field(description="logout | ended | password | disabled | admin | …")


class SessionsEnded(BaseModel):
    ended: int = Field(description="How many live sessions were ended")


class TokenIssued(TokenOut):
    token: str = Field(description="The secret. It is shown once and cannot be retrieved again.")


class OrgCreate(BaseModel):
    slug: str = Field(max_length=64, description="Registry namespace", examples=["acme"])
    name: str = Field(max_length=120, examples=["Acme Corp"])
    description: str = Field(default="", max_length=5000)
    website: str = Field(default="", max_length=500)


class OrgUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=120)
    description: str | None = Field(default=None, max_length=5000)
    website: str | None = Field(default=None, max_length=500)


class OrgOut(ORM):
    id: uuid.UUID
    slug: str
    name: str
    description: str
    website: str
    verified: bool
    verified_at: datetime | None
    verification_requested_at: datetime | None
    created_at: datetime


class MyOrg(BaseModel):
    organization: OrgOut
    role: str


class MeOut(BaseModel):
    account: AccountOut
    organizations: list[MyOrg]


class MemberOut(BaseModel):
    username: str
    display_name: str
    role: str
    since: datetime


class InviteIn(BaseModel):
    username: str = Field(max_length=64)
    role: Literal["owner", "editor", "finance", "viewer"] = "viewer"


class RoleIn(BaseModel):
    role: Literal["owner", "editor", "finance", "viewer"]


class InvitationOut(ORM):
    id: uuid.UUID
    organization: OrgOut
    role: str
    created_at: datetime


class VerificationDecision(BaseModel):
    verified: bool
    note: str = Field(default="", max_length=2000)


class AccountAdminUpdate(BaseModel):
    is_admin: bool | None = None
    is_active: bool | None = None


class EmailChange(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)


class EmailChangeAsked(BaseModel):
    pending_email: str
    detail: str


class LinkToken(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class AccountDeletion(BaseModel):
    password: str = Field(max_length=1024)
    code: str = Field(default="", max_length=64)
