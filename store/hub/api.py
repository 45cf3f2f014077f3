"""JSON API of hub repositories (under /api/v1): create, read, change, delete, transfer,
collaborators, stars, a namespace's default visibility.

Repositories are addressed as ``{namespace}/{name}`` (two components, as Docker Hub's); the
visibility setting (store.registry.api) also takes deeper sub-repositories.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from store.accounts.caller import Caller, CurrentAccount
from store.accounts.models import Account
from store.catalog.markdown import render as render_markdown
from store.config import Settings
from store.deps import DbSession, SettingsDep
from store.hub import view
from store.registry import hub, repositories, stars
from store.registry.models import HubRepository
from store.registry.schemas import (
    CollaboratorIn,
    CollaboratorOut,
    DeletedOut,
    HubImageOut,
    HubRepositoryOut,
    HubTagOut,
    HubTagPageOut,
    NamespaceDefaultsIn,
    NamespaceDefaultsOut,
    PlatformOut,
    PullDay,
    PullHistoryOut,
    RepositoryIn,
    RepositoryOut,
    RepositoryPatch,
    TagOut,
    TransferIn,
)
from store.registry.sync import RegistryClient

router = APIRouter(tags=["repositories"])
# Read-only routes (tags, pulls), included before ``router``.
tags_router = APIRouter(tags=["repositories"])


def repository_out(
    session: Session, settings: Settings, account: Account | None, repo: HubRepository
) -> RepositoryOut:
    product = hub.product_of(session, repo.name)
    registry_host = settings.registry_url.split("://", 1)[-1].rstrip("/")
    return RepositoryOut(
        name=repo.name.split("/", 1)[1],
        namespace=repo.namespace,
        repository=repo.name,
        description=repo.description,
        readme=repo.readme_md,
        readme_html=render_markdown(repo.readme_md),
        visibility=repo.visibility,
        is_private=repo.private,
        pull_count=repo.pull_count,
        star_count=repo.star_count,
        starred=stars.starred(session, account, repo),
        date_registered=repo.created_at,
        last_updated=repo.last_pushed_at,
        permission=repositories.level(session, account, repo.name),
        product=(
            product.repository if product is not None and product.status == "published" else None
        ),
        page_url=f"{settings.public_url}/r/{repo.name}",
        pull_command=f"docker pull {registry_host}/{repo.name}",
    )


def _operator(request: Request) -> AbstractContextManager[RegistryClient]:
    return repositories.operator_client(
        request.app.state.settings, request.app.state.keyring.signer("registry")
    )


@router.put("/namespaces/{namespace}/defaults", response_model=NamespaceDefaultsOut)
def set_namespace_defaults(
    namespace: str, body: NamespaceDefaultsIn, account: CurrentAccount, session: DbSession
) -> NamespaceDefaultsOut:
    """The visibility new repositories of the namespace get (its user or organization
    owners)."""
    row = repositories.set_default_visibility(
        session, actor=account, namespace=namespace, visibility=body.default_visibility
    )
    return NamespaceDefaultsOut(
        namespace=row.name, kind=row.kind, default_visibility=row.default_visibility
    )


@router.post("/repositories", response_model=RepositoryOut, status_code=201)
def create_repository(
    body: RepositoryIn, account: CurrentAccount, session: DbSession, settings: SettingsDep
) -> RepositoryOut:
    """Create a repository before its first push (a push creates it as well)."""
    repo = repositories.create(
        session,
        actor=account,
        name=body.name,
        description=body.description,
        readme_md=body.readme,
        visibility=body.visibility,
    )
    return repository_out(session, settings, account, repo)


@router.get(
    "/repositories/{namespace}/{repo_name}/collaborators", response_model=list[CollaboratorOut]
)
def list_collaborators(
    namespace: str, repo_name: str, account: CurrentAccount, session: DbSession
) -> list[CollaboratorOut]:
    """Who was given access to a repository of a personal namespace."""
    name = f"{namespace}/{repo_name}"
    found = repositories.list_collaborators(session, actor=account, name=name)
    return [CollaboratorOut(username=c.username, permission=c.permission) for c in found]


@router.put(
    "/repositories/{namespace}/{repo_name}/collaborators/{username}", response_model=CollaboratorOut
)
def set_collaborator(
    namespace: str,
    repo_name: str,
    username: str,
    body: CollaboratorIn,
    account: CurrentAccount,
    session: DbSession,
) -> CollaboratorOut:
    """Give an account read, write or admin on the repository (owner, admin collaborators)."""
    name = f"{namespace}/{repo_name}"
    found = repositories.set_collaborator(
        session, actor=account, name=name, username=username, permission=body.permission
    )
    return CollaboratorOut(username=found.username, permission=found.permission)


@router.delete("/repositories/{namespace}/{repo_name}/collaborators/{username}", status_code=204)
def remove_collaborator(
    namespace: str, repo_name: str, username: str, account: CurrentAccount, session: DbSession
) -> Response:
    name = f"{namespace}/{repo_name}"
    repositories.remove_collaborator(session, actor=account, name=name, username=username)
    return Response(status_code=204)


@router.put("/repositories/{namespace}/{repo_name}/star", response_model=RepositoryOut)
def star_repository(
    namespace: str,
    repo_name: str,
    account: CurrentAccount,
    session: DbSession,
    settings: SettingsDep,
) -> RepositoryOut:
    """Star a repository (once; starring again changes nothing)."""
    name = f"{namespace}/{repo_name}"
    repo = stars.star(session, account=account, name=name)
    return repository_out(session, settings, account, repo)


@router.delete("/repositories/{namespace}/{repo_name}/star", response_model=RepositoryOut)
def unstar_repository(
    namespace: str,
    repo_name: str,
    account: CurrentAccount,
    session: DbSession,
    settings: SettingsDep,
) -> RepositoryOut:
    name = f"{namespace}/{repo_name}"
    repo = stars.unstar(session, account=account, name=name)
    return repository_out(session, settings, account, repo)


@router.post("/repositories/{namespace}/{repo_name}/transfer", response_model=RepositoryOut)
def transfer_repository(
    namespace: str,
    repo_name: str,
    body: TransferIn,
    request: Request,
    account: CurrentAccount,
    session: DbSession,
    settings: SettingsDep,
) -> RepositoryOut:
    """Move a repository of your namespace to an organization you own (tags copied in the
    registry, pulls and stars kept; collaborators dropped)."""
    name = f"{namespace}/{repo_name}"
    with _operator(request) as client:
        repo = repositories.transfer(
            session, client, actor=account, name=name, organization=body.organization
        )
    return repository_out(session, settings, account, repo)


@router.get("/repositories/{namespace}/{repo_name}", response_model=RepositoryOut)
def get_repository(
    namespace: str, repo_name: str, caller: Caller, session: DbSession, settings: SettingsDep
) -> RepositoryOut:
    """A repository the caller may see; 404 (as for one that does not exist) otherwise."""
    name = f"{namespace}/{repo_name}"
    repo = repositories.get(session, caller.account, name)
    return repository_out(session, settings, caller.account, repo)


@router.patch("/repositories/{namespace}/{repo_name}", response_model=RepositoryOut)
def update_repository(
    namespace: str,
    repo_name: str,
    body: RepositoryPatch,
    account: CurrentAccount,
    session: DbSession,
    settings: SettingsDep,
) -> RepositoryOut:
    """Change the description, README or visibility (owners, admin collaborators)."""
    name = f"{namespace}/{repo_name}"
    repo = repositories.update(
        session,
        actor=account,
        name=name,
        description=body.description,
        readme_md=body.readme,
        visibility=body.visibility,
    )
    return repository_out(session, settings, account, repo)


@router.delete("/repositories/{namespace}/{repo_name}", response_model=DeletedOut)
def delete_repository(
    namespace: str, repo_name: str, request: Request, account: CurrentAccount, session: DbSession
) -> DeletedOut:
    """Delete a repository: its tags in the registry, then its hub record (owners)."""
    name = f"{namespace}/{repo_name}"
    with _operator(request) as client:
        count = repositories.delete(session, client, actor=account, name=name)
    return DeletedOut(repository=repositories.clean_name(name), manifests_deleted=count)


def _tag_views(request: Request, session: Session, repo: HubRepository) -> list[view.TagView]:
    with _operator(request) as client:
        return view.tags(session, repo, factory=request.app.state.sessionmaker, client=client)


@tags_router.get("/repositories/{namespace}/{repo_name}/tags", response_model=list[TagOut])
def repository_tags(
    namespace: str, repo_name: str, request: Request, caller: Caller, session: DbSession
) -> list[TagOut]:
    """Tags newest first, with digest, size and OS/architecture per platform (read from
    the registry), pusher and signature status."""
    name = f"{namespace}/{repo_name}"
    repo = repositories.get(session, caller.account, name)
    return [
        TagOut(
            name=t.tag,
            digest=t.digest,
            media_type=t.media_type,
            size=t.size,
            platforms=[PlatformOut(**p) for p in t.platforms] if t.platforms is not None else None,
            pushed_at=t.pushed_at,
            pushed_by=t.pushed_by,
            signed=t.signed,
            signers=t.signers,
            certified=t.certified,
        )
        for t in _tag_views(request, session, repo)
    ]


@tags_router.get("/repositories/{namespace}/{repo_name}/pulls", response_model=PullHistoryOut)
def repository_pulls(
    namespace: str,
    repo_name: str,
    caller: Caller,
    session: DbSession,
    days: int = Query(default=30, ge=1, le=366),
) -> PullHistoryOut:
    """Manifest pulls per day (a multi-arch pull counts once)."""
    name = f"{namespace}/{repo_name}"
    repo = repositories.get(session, caller.account, name)
    history = hub.pull_history(session, name=repo.name, days=days)
    return PullHistoryOut(
        repository=history.repository,
        total=history.total,
        days=[PullDay(day=d, count=c) for d, c in history.days],
    )


# --- Docker Hub's v2 shapes (docker/hub-tool and scripts written for Docker Hub) ----------

hub_v2 = APIRouter(tags=["repositories"])


@hub_v2.get("/v2/repositories/{namespace}/{name}/tags", response_model=HubTagPageOut)
def hub_tags(
    namespace: str,
    name: str,
    request: Request,
    caller: Caller,
    session: DbSession,
    page: int = Query(default=1, ge=1, le=10_000),
    page_size: int = Query(default=10, ge=1, le=100),
) -> HubTagPageOut:
    """Docker Hub's tag list: ``{count, next, previous, results}``."""
    repo = repositories.get(session, caller.account, f"{namespace}/{name}")
    views = _tag_views(request, session, repo)
    chunk = views[(page - 1) * page_size : page * page_size]
    base = f"{request.app.state.settings.public_url}/v2/repositories/{repo.name}/tags"

    def link(number: int) -> str:
        return f"{base}?page={number}&page_size={page_size}"

    return HubTagPageOut(
        count=len(views),
        next=link(page + 1) if page * page_size < len(views) else None,
        previous=link(page - 1) if page > 1 else None,
        results=[
            HubTagOut(
                name=t.tag,
                full_size=t.size or 0,
                last_updated=t.pushed_at,
                last_updater_username=t.pushed_by,
                digest=t.digest,
                media_type=t.media_type,
                images=[
                    HubImageOut(
                        architecture=p["architecture"],
                        os=p["os"],
                        variant=p.get("variant") or None,
                        digest=p["digest"],
                        size=p["size"],
                    )
                    for p in t.platforms or []
                ],
            )
            for t in chunk
        ],
    )


@hub_v2.get("/v2/repositories/{namespace}/{name}", response_model=HubRepositoryOut)
def hub_repository(
    namespace: str, name: str, caller: Caller, session: DbSession
) -> HubRepositoryOut:
    """Docker Hub's repository shape."""
    repo = repositories.get(session, caller.account, f"{namespace}/{name}")
    return HubRepositoryOut(
        user=repo.namespace,
        name=repo.name.split("/", 1)[1],
        namespace=repo.namespace,
        description=repo.description,
        is_private=repo.private,
        star_count=repo.star_count,
        pull_count=repo.pull_count,
        last_updated=repo.last_pushed_at,
        date_registered=repo.created_at,
        full_description=repo.readme_md,
    )
