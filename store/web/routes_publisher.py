"""The publisher dashboard: organizations, members, invitations, robot tokens, verification."""

from __future__ import annotations

import uuid
from functools import partial

from fastapi import Request
from starlette.responses import Response

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.billing import sales
from store.catalog import service as catalog
from store.catalog.models import Product
from store.db import utcnow
from store.deps import DbSession, get_settings
from store.errors import NotFound
from store.registry import hub
from store.registry import visibility as registry_visibility
from store.security_headers import NO_STORE
from store.signing import service as signing
from store.web import charts, forms
from store.web.forms import Form, FormState
from store.web.routing import RequiredAccount, page_router
from store.web.templating import flash, format_money, redirect, render

router = page_router()


def member_org(session: DbSession, account: Account, slug: str) -> Organization:
    """The organization if the account belongs to it (or is an admin); 404 otherwise."""
    org = accounts.get_organization(session, slug)
    if not accounts.has_role(session, account, org, "viewer"):
        raise NotFound(f"No organization named '{slug}'")
    return org


def _index_page(
    request: Request,
    session: DbSession,
    account: Account,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    return render(
        request,
        "publisher/index.html",
        {"orgs": accounts.organizations_of(session, account), "form": form},
        status=status,
    )


@router.get("/publish")
def publisher_home(request: Request, session: DbSession, account: RequiredAccount) -> Response:
    return _index_page(request, session, account)


@router.post("/publish")
def create_org(
    request: Request, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Create an organization (a registry namespace) owned by the current account."""
    return forms.submit(
        session,
        form,
        "org",
        lambda: accounts.create_organization(
            session,
            owner=account,
            slug=forms.text(form, "slug"),
            name=forms.text(form, "name"),
            description=forms.text(form, "description"),
            website=forms.text(form, "website"),
        ),
        failed=partial(_index_page, request, session, account),
        done=lambda org: forms.redirect_with(
            request,
            f"Organization {org.slug} is created; you are its owner.",
            f"/publish/{org.slug}",
        ),
    )


def org_page(
    request: Request,
    session: DbSession,
    account: Account,
    org: Organization,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    role = accounts.role_of(session, account, org) or ("admin" if account.is_admin else None)
    is_owner = accounts.has_role(session, account, org, "owner")
    sees_sales = accounts.may_see_revenue(session, account, org)
    products = catalog.products_of_org(session, org)
    return render(
        request,
        "publisher/org.html",
        {
            "org": org,
            "role": role,
            "is_owner": is_owner,
            "can_edit": accounts.has_role(session, account, org, "editor"),
            "products": products,
            "sees_sales": sees_sales,
            **activity(session, account, org, products, with_sales=sees_sales),
            "members": accounts.members(session, org),
            "push_flags": signing.list_flags(session, org=org),
            "invitations": accounts.org_invitations(session, org) if is_owner else [],
            "robots": accounts.list_tokens(session, org=org) if is_owner else [],
            "repositories": registry_visibility.list_repositories(session, org=org),
            "roles": accounts.ROLES,
            "account": account,
            "form": form,
            "now": utcnow(),
        },
        status=status,
    )


PULL_DAYS = 30


def activity(
    session: DbSession,
    account: Account,
    org: Organization,
    products: list[Product],
    *,
    with_sales: bool,
) -> dict[str, object]:
    """The dashboard's charts: pulls per day of all the organization's repositories (with a
    per-product breakdown) and, for owners, net sales per month."""
    histories = {
        p.repository: hub.pull_history(session, name=p.repository, days=PULL_DAYS) for p in products
    }
    pulls = charts.pulls_chart(
        charts.sum_days(h.days for h in histories.values()),
        chart_id="org-pulls",
        subject=f"all repositories of {org.slug}",
    )
    rows = sales.sales_of(session, actor=account, org=org) if with_sales else []
    return {
        "pulls_chart": pulls,
        "pulls_by_product": [
            (p, sum(c for _, c in histories[p.repository].days), histories[p.repository].total)
            for p in products
        ],
        "sales_charts": charts.sales_charts(rows, money=format_money, chart_id="org-sales"),
        "pull_days": PULL_DAYS,
    }


@router.get("/publish/{org}")
def org_dashboard(
    request: Request, org: str, session: DbSession, account: RequiredAccount
) -> Response:
    return org_page(request, session, account, member_org(session, account, org))


@router.post("/publish/{org}/-/invite")
def invite(
    request: Request, org: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    organization = member_org(session, account, org)
    return forms.submit(
        session,
        form,
        "invite",
        lambda: accounts.invite_member(
            session,
            org=organization,
            actor=account,
            username=forms.text(form, "username"),
            role=forms.text(form, "role"),
            settings=get_settings(request),
        ),
        failed=lambda state, status: org_page(
            request, session, account, organization, state, status
        ),
        done=lambda invitation: forms.redirect_with(
            request,
            f"{invitation.account.username} is invited as {invitation.role}.",
            f"/publish/{organization.slug}",
        ),
    )


@router.post("/publish/{org}/-/members/{username}/role")
def change_role(
    request: Request,
    org: str,
    username: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    organization = member_org(session, account, org)
    role = forms.text(form, "role")
    return forms.submit(
        session,
        form,
        f"member-{username}",
        lambda: accounts.change_role(
            session, org=organization, actor=account, username=username, role=role
        ),
        failed=lambda state, status: org_page(
            request, session, account, organization, state, status
        ),
        done=lambda _: forms.redirect_with(
            request, f"{username} is now {role}.", f"/publish/{organization.slug}"
        ),
    )


@router.post("/publish/{org}/-/members/{username}/remove")
def remove_member(
    request: Request,
    org: str,
    username: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    organization = member_org(session, account, org)

    def removed(_: object) -> Response:
        if username.lower() == account.username:
            return forms.redirect_with(
                request, f"You left {organization.slug}.", "/publish", "info"
            )
        return forms.redirect_with(
            request,
            f"{username} is no longer a member of {organization.slug}.",
            f"/publish/{organization.slug}",
        )

    return forms.submit(
        session,
        form,
        f"member-{username}",
        lambda: accounts.remove_member(session, org=organization, actor=account, username=username),
        failed=lambda state, status: org_page(
            request, session, account, organization, state, status
        ),
        done=removed,
    )


@router.post("/publish/{org}/-/robots", dependencies=[NO_STORE])
def create_robot(
    request: Request, org: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """A robot token for CI: pull and/or push in this namespace; the secret is shown once."""
    organization = member_org(session, account, org)
    return forms.submit(
        session,
        form,
        "robot",
        lambda: accounts.create_token(
            session,
            kind="robot",
            name=forms.text(form, "name"),
            scopes=forms.choices(form, "scopes"),
            created_by=account,
            org=organization,
            expires_at=forms.expiry(form),
        ),
        failed=partial(org_page, request, session, account, organization),
        done=lambda issued: render(
            request,
            "account/token_created.html",
            {
                "issued": issued,
                "back": f"/publish/{organization.slug}",
                # The registry's token endpoint identifies robots by their secret; the
                # username shown is the namespace, for readability in docker's config.
                "username": organization.slug,
            },
            no_store=True,
        ),
    )


@router.post("/publish/{org}/-/repositories/visibility")
def set_repository_visibility(
    request: Request, org: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    """Mark a repository of the namespace public or private (owners)."""
    organization = member_org(session, account, org)
    name = f"{organization.slug}/{str(form.get('name', '')).strip().lower()}"
    view = registry_visibility.set_visibility(
        session, actor=account, name=name, visibility=str(form.get("visibility", ""))
    )
    flash(request, f"{view.repository} is now {view.visibility}.")
    return redirect(f"/publish/{organization.slug}")


@router.post("/publish/{org}/-/robots/{token_id}/revoke")
def revoke_robot(
    request: Request, org: str, token_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    organization = member_org(session, account, org)
    token = accounts.get_token(session, token_id)
    if token.organization_id != organization.id:
        raise NotFound("No such token")
    accounts.revoke_token(session, token=token, actor=account)
    flash(request, f"Robot token '{token.name}' is revoked.")
    return redirect(f"/publish/{organization.slug}")


@router.post("/publish/{org}/-/verification")
def request_verification(
    request: Request, org: str, session: DbSession, account: RequiredAccount
) -> Response:
    organization = member_org(session, account, org)
    accounts.request_verification(session, org=organization, actor=account)
    flash(request, "Verification is requested; an administrator will review it.")
    return redirect(f"/publish/{organization.slug}")
