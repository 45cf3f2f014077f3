"""Hub repository pages: /r/<namespace>/<name> (README, pull command, tags, pulls, stars),
its settings (description, README, visibility, collaborators, delete, transfer), creating a
repository, and the account's repositories.

Pages are for two-component names (``namespace/name``), as Docker Hub's; deeper
sub-repositories are reached through their parent's product or the registry. A private
repository is a 404 for whoever may not see it, as a name never pushed is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import Request
from sqlalchemy import or_, select
from starlette.responses import Response

from store.accounts.models import Account, Membership, Organization
from store.deps import DbSession
from store.errors import ValidationFailed
from store.hub import view
from store.registry import hub, repositories, stars
from store.registry.models import COLLABORATOR_PERMISSIONS, HubRepository, RepositoryCollaborator
from store.web import charts, forms
from store.web.forms import Form, FormState
from store.web.routing import RequiredAccount, Viewer, page_router
from store.web.templating import flash, redirect, render

router = page_router()
PULL_DAYS = 30
VISIBILITY_OPTIONS = [
    ("private", "Private: only those given access pull it"),
    ("public", "Public: anyone pulls it"),
]


def _operator(request: Request) -> Any:
    return repositories.operator_client(
        request.app.state.settings, request.app.state.keyring.signer("registry")
    )


# --- creating, and the account's repositories -------------------------------------------


def _owned_namespaces(session: DbSession, account: Account) -> list[str]:
    """The account's own namespace and those of the organisations it may push to."""
    slugs = session.scalars(
        select(Organization.slug)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.account_id == account.id, Membership.role.in_(("editor", "owner")))
        .order_by(Organization.slug)
    )
    return [account.username, *slugs]


def _new_page(
    request: Request,
    session: DbSession,
    account: Account,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    return render(
        request,
        "hub/new.html",
        {
            "namespaces": [(n, n) for n in _owned_namespaces(session, account)],
            "visibilities": VISIBILITY_OPTIONS,
            "form": form,
        },
        status=status,
    )


@router.get("/repositories/new")
def new_repository_page(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    return _new_page(request, session, account)


@router.post("/repositories/new")
def create_repository(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    name = f"{forms.text(form, 'namespace').strip()}/{forms.text(form, 'name').strip()}"
    return forms.submit(
        session,
        form,
        "repo",
        lambda: repositories.create(
            session,
            actor=account,
            name=name,
            description=forms.text(form, "description"),
            readme_md=forms.text(form, "readme"),
            visibility=forms.text(form, "visibility") or None,
        ),
        failed=lambda state, status: _new_page(request, session, account, state, status),
        done=lambda repo: forms.redirect_with(
            request, f"{repo.name} is created. Push to it with docker push.", f"/r/{repo.name}"
        ),
    )


def _mine_page(
    request: Request,
    session: DbSession,
    account: Account,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    namespaces = _owned_namespaces(session, account)
    shared = select(RepositoryCollaborator.repository_id).where(
        RepositoryCollaborator.account_id == account.id
    )
    repos = session.scalars(
        select(HubRepository)
        .where(or_(HubRepository.namespace.in_(namespaces), HubRepository.id.in_(shared)))
        .order_by(HubRepository.name)
    )
    defaults = repositories.defaults_of(session, account)
    shown = {f"defaults-{ns.name}" for ns in defaults}
    return render(
        request,
        "hub/mine.html",
        {
            "repositories": list(repos),
            "starred": [
                r
                for r in stars.starred_by(session, account)
                if repositories.may_pull(session, account, r.name)
            ],
            "defaults": defaults,
            # an error about a namespace the page has no form for (not the account's)
            "defaults_error": form.error
            if form.name.startswith("defaults-") and form.name not in shown
            else "",
            "visibilities": [("private", "Private"), ("public", "Public")],
            "form": form,
        },
        status=status,
    )


@router.get("/my/repositories")
def my_repositories(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    """Repositories of the account's namespaces, those shared with it, its stars, and the
    visibility new repositories get in the namespaces it owns."""
    return _mine_page(request, session, account)


@router.post("/my/repositories/defaults")
def save_namespace_defaults(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """The visibility new repositories of one namespace get (its user, its organization's
    owners): as ``PUT /api/v1/namespaces/<ns>/defaults``."""
    namespace = forms.text(form, "namespace").strip().lower()
    return forms.submit(
        session,
        form,
        f"defaults-{namespace}",
        lambda: repositories.set_default_visibility(
            session,
            actor=account,
            namespace=namespace,
            visibility=forms.text(form, "default_visibility"),
        ),
        failed=partial(_mine_page, request, session, account),
        done=lambda row: forms.redirect_with(
            request,
            f"New repositories in {row.name}/ are {row.default_visibility}.",
            "/my/repositories",
        ),
    )


# --- settings ---------------------------------------------------------------------------


def _settings_page(
    request: Request,
    session: DbSession,
    account: Account,
    repo: HubRepository,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    level = repositories.level(session, account, repo.name)
    personal = (row := repositories.namespace_of(session, repo.name)) is not None and (
        row.kind == "user"
    )
    owned_orgs = session.scalars(
        select(Organization.slug)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.account_id == account.id, Membership.role == "owner")
        .order_by(Organization.slug)
    )
    return render(
        request,
        "hub/settings.html",
        {
            "repo": repo,
            "level": level,
            "personal": personal,
            "collaborators": repositories.list_collaborators(session, actor=account, name=repo.name)
            if personal
            else [],
            "permissions": [(p, p.capitalize()) for p in COLLABORATOR_PERMISSIONS],
            "visibilities": VISIBILITY_OPTIONS,
            "visibility_note": hub.mark_note(
                repo.name, hub.product_of(session, repo.name), repo.visibility
            ),
            "organizations": [(o, o) for o in owned_orgs],
            "form": form,
        },
        status=status,
    )


def _settings_failed(
    request: Request, session: DbSession, account: Account, repo: HubRepository
) -> Callable[[FormState, int], Response]:
    """The settings page again, with a form's input and its error."""
    return lambda state, status: _settings_page(request, session, account, repo, state, status)


def _admin_repo(session: DbSession, account: Account, name: str) -> HubRepository:
    repositories.require_level(session, account, repositories.clean_name(name), "admin")
    return repositories.get(session, account, name)


@router.get("/r/{namespace}/{repo_name}/settings")
def repository_settings(
    request: Request, namespace: str, repo_name: str, session: DbSession, account: RequiredAccount
) -> Response:
    name = f"{namespace}/{repo_name}"
    return _settings_page(request, session, account, _admin_repo(session, account, name))


@router.post("/r/{namespace}/{repo_name}/settings")
def save_settings(
    request: Request,
    namespace: str,
    repo_name: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = f"{namespace}/{repo_name}"
    repo = _admin_repo(session, account, name)
    return forms.submit(
        session,
        form,
        "settings",
        lambda: repositories.update(
            session,
            actor=account,
            name=repo.name,
            description=forms.text(form, "description"),
            readme_md=forms.text(form, "readme"),
            visibility=forms.text(form, "visibility"),
        ),
        failed=_settings_failed(request, session, account, repo),
        done=lambda _: forms.redirect_with(request, "Saved.", f"/r/{repo.name}"),
    )


@router.post("/r/{namespace}/{repo_name}/collaborators")
def add_collaborator(
    request: Request,
    namespace: str,
    repo_name: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = f"{namespace}/{repo_name}"
    repo = _admin_repo(session, account, name)
    return forms.submit(
        session,
        form,
        "collaborator",
        lambda: repositories.set_collaborator(
            session,
            actor=account,
            name=repo.name,
            username=forms.text(form, "username"),
            permission=forms.text(form, "permission"),
        ),
        failed=_settings_failed(request, session, account, repo),
        done=lambda added: forms.redirect_with(
            request,
            f"{added.username} has {added.permission} access to {repo.name}.",
            f"/r/{repo.name}/settings",
        ),
    )


@router.post("/r/{namespace}/{repo_name}/collaborators/{username}/remove")
def remove_collaborator(
    request: Request,
    namespace: str,
    repo_name: str,
    username: str,
    session: DbSession,
    account: RequiredAccount,
) -> Response:
    name = f"{namespace}/{repo_name}"
    repo = _admin_repo(session, account, name)
    repositories.remove_collaborator(session, actor=account, name=repo.name, username=username)
    flash(request, f"{username} no longer has access to {repo.name}.")
    return redirect(f"/r/{repo.name}/settings")


@router.post("/r/{namespace}/{repo_name}/delete")
def delete_repository(
    request: Request,
    namespace: str,
    repo_name: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = f"{namespace}/{repo_name}"
    repo = _admin_repo(session, account, name)

    def delete() -> int:
        if forms.text(form, "confirm").strip() != repo.name:
            raise ValidationFailed(f"Type {repo.name} to confirm", field="confirm")
        with _operator(request) as client:
            return repositories.delete(session, client, actor=account, name=repo.name)

    return forms.submit(
        session,
        form,
        "delete",
        delete,
        failed=_settings_failed(request, session, account, repo),
        done=lambda _: forms.redirect_with(
            request, f"{repo.name} is deleted, with its tags.", "/my/repositories"
        ),
    )


@router.post("/r/{namespace}/{repo_name}/transfer")
def transfer_repository(
    request: Request,
    namespace: str,
    repo_name: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = f"{namespace}/{repo_name}"
    repo = _admin_repo(session, account, name)
    old = repo.name
    with _operator(request) as client:
        return forms.submit(
            session,
            form,
            "transfer",
            lambda: repositories.transfer(
                session,
                client,
                actor=account,
                name=old,
                organization=forms.text(form, "organization"),
            ),
            failed=_settings_failed(request, session, account, repo),
            done=lambda moved: forms.redirect_with(
                request, f"{old} is now {moved.name}.", f"/r/{moved.name}"
            ),
        )


@router.post("/r/{namespace}/{repo_name}/star")
def star_repository(
    request: Request,
    namespace: str,
    repo_name: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = f"{namespace}/{repo_name}"
    if forms.text(form, "action") == "unstar":
        repo = stars.unstar(session, account=account, name=name)
    else:
        repo = stars.star(session, account=account, name=name)
    return redirect(f"/r/{repo.name}")


# --- the page ---------------------------------------------------------------------------


@router.get("/r/{namespace}/{repo_name}")
def repository_page(
    request: Request, namespace: str, repo_name: str, session: DbSession, viewer: Viewer
) -> Response:
    """README, pull command, tags (digest, size, platforms, pushed, signature), pulls per
    day, stars; 404 for whoever may not see it."""
    name = f"{namespace}/{repo_name}"
    repo = repositories.get(session, viewer, name)
    with _operator(request) as client:
        tags = view.tags(session, repo, factory=request.app.state.sessionmaker, client=client)
    history = hub.pull_history(session, name=repo.name, days=PULL_DAYS)
    product = view.listed_product(session, repo)
    names = [t.tag for t in tags]
    level = repositories.level(session, viewer, repo.name)
    return render(
        request,
        "hub/repository.html",
        {
            "repo": repo,
            "tags": tags,
            "pull_tag": "latest" if not names or "latest" in names else names[0],
            "product": product,
            "verified": _verified(session, repo.namespace),
            "level": level,
            "starred": stars.starred(session, viewer, repo),
            "signed_in": viewer is not None,
            "pulls_chart": charts.pulls_chart(
                history.days, chart_id="repo-pulls", subject=repo.name
            ),
            "pull_days": PULL_DAYS,
            # Automated builds (store.builds) decide who sees them; linked for those with a
            # level on the repository.
            "builds_url": f"/r/{repo.name}/builds" if level is not None else None,
            # Those with a level see why a public mark is not in effect.
            "visibility_note": hub.mark_note(
                repo.name, hub.product_of(session, repo.name), repo.visibility
            )
            if level is not None
            else "",
            "platform_label": view.platform_label,
        },
    )


def _verified(session: DbSession, namespace: str) -> bool:
    org = session.scalar(select(Organization).where(Organization.slug == namespace))
    return org is not None and org.verified
