"""JSON shapes of the registry API."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class Refusal(BaseModel):
    repository: str
    actions: list[str]
    reason: str = Field(
        description="no_license, expired, revoked, suspended, product_suspended, "
        "login_required, push_denied, catalog_denied, token_scope or no_access"
    )
    message: str
    product_url: str | None = Field(default=None, description="Where to get access")


class ScopeGrant(BaseModel):
    type: str
    name: str
    actions: list[str]


class AccessCheckOut(BaseModel):
    """What a `docker pull`/`push` by the caller would be granted, and why not the rest."""

    subject: str = Field(description="Who is asking (empty for anonymous)")
    granted: list[ScopeGrant]
    refused: list[Refusal]
    invalid: list[str] = Field(default_factory=list, description="Scopes that could not be parsed")


class PullDay(BaseModel):
    day: date
    count: int


class PullHistoryOut(BaseModel):
    repository: str
    total: int = Field(description="Manifest downloads since the repository was first seen")
    days: list[PullDay]


class VisibilityIn(BaseModel):
    visibility: str = Field(description="private (default) or public: anyone may pull")


class VisibilityOut(BaseModel):
    repository: str
    visibility: str = Field(description="The namespace owner's setting: private or public")
    public: bool = Field(
        description="Anyone may pull it: marked public (unless its product is sold through a "
        "paid tier or suspended), or it belongs to a published product whose tiers are all "
        "free and public"
    )
    product: str | None = Field(default=None, description="The product it belongs to")
    note: str = Field(
        default="",
        description="Why the setting is not what is in effect (a public mark on a repository "
        "of a paid or suspended product); empty when it is",
    )


class RepositoryIn(BaseModel):
    name: str = Field(description="NAMESPACE/NAME: your username or an organization's slug")
    description: str = Field(default="", description="One line, at most 300 characters")
    readme: str = Field(default="", description="Markdown, at most 100,000 characters")
    visibility: str | None = Field(
        default=None, description="private or public (default: the namespace's default)"
    )


class RepositoryPatch(BaseModel):
    description: str | None = None
    readme: str | None = None
    visibility: str | None = None


class RepositoryOut(BaseModel):
    """A hub repository (fields shaped like Docker Hub's v2 repository where they exist)."""

    name: str = Field(description="The repository's name within its namespace")
    namespace: str
    repository: str = Field(description="NAMESPACE/NAME, as docker pull takes it")
    description: str
    readme: str = Field(description="Markdown source")
    readme_html: str = Field(description="The README rendered and sanitised")
    visibility: str
    is_private: bool = Field(description="Not pullable by anyone who is not given access")
    pull_count: int
    star_count: int
    starred: bool = Field(description="The caller has starred it")
    date_registered: datetime
    last_updated: datetime | None = Field(description="The last push")
    permission: str | None = Field(description="The caller's level: read, write, admin, owner")
    product: str | None = Field(default=None, description="The store product it belongs to")
    page_url: str
    pull_command: str


class CollaboratorIn(BaseModel):
    permission: str = Field(description="read (pull), write (pull, push) or admin")


class CollaboratorOut(BaseModel):
    username: str
    permission: str


class TransferIn(BaseModel):
    organization: str = Field(description="The slug of an organization you own")


class DeletedOut(BaseModel):
    repository: str
    manifests_deleted: int


class NamespaceDefaultsIn(BaseModel):
    default_visibility: str = Field(description="private or public, for new repositories")


class NamespaceDefaultsOut(BaseModel):
    namespace: str
    kind: str = Field(description="user or organization")
    default_visibility: str


class PlatformOut(BaseModel):
    os: str
    architecture: str
    variant: str = ""
    digest: str
    size: int = Field(description="Compressed size of the config and layers, bytes")


class TagOut(BaseModel):
    name: str
    digest: str
    media_type: str
    size: int | None = Field(description="Largest platform's size, bytes (None until read)")
    platforms: list[PlatformOut] | None = Field(
        description="Per platform, read from the registry (None until read)"
    )
    pushed_at: datetime
    pushed_by: str
    signed: bool
    signers: list[str]
    certified: bool


class HubImageOut(BaseModel):
    architecture: str
    os: str
    variant: str | None
    digest: str
    size: int


class HubTagOut(BaseModel):
    """Docker Hub's v2 tag shape."""

    name: str
    full_size: int
    last_updated: datetime
    last_updater_username: str
    digest: str
    media_type: str
    images: list[HubImageOut]
    tag_status: str = "active"


class HubTagPageOut(BaseModel):
    count: int
    next: str | None
    previous: str | None
    results: list[HubTagOut]


class HubRepositoryOut(BaseModel):
    """Docker Hub's v2 repository shape."""

    user: str
    name: str
    namespace: str
    repository_type: str = "image"
    status: int = 1
    description: str
    is_private: bool
    star_count: int
    pull_count: int
    last_updated: datetime | None
    date_registered: datetime
    full_description: str
