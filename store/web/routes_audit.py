"""Pages: the audit log for administrators (filterable) and for an organization's owners."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from store.accounts import service as accounts
from store.audit import service as audit
from store.deps import DbSession
from store.errors import NotFound, StoreError
from store.web.routes_catalog import BadRequest, parse_page
from store.web.routing import AdminAccount, RequiredAccount, page_router
from store.web.templating import render, with_query

router = page_router()
PER_PAGE = 50


@router.get("/admin/audit")
def admin_log(request: Request, session: DbSession, admin: AdminAccount) -> Response:
    """Every audited action, newest first, filtered by action, actor or organization."""
    params = request.query_params
    chosen = {k: params.get(k, "").strip()[:100] for k in ("action", "actor", "org")}
    org_id = None
    if chosen["org"]:
        try:
            org_id = accounts.get_organization(session, chosen["org"]).id
        except StoreError as exc:
            raise BadRequest(exc.detail, code="bad_filter") from exc
    flt = audit.AuditFilter(action=chosen["action"], actor=chosen["actor"], org_id=org_id)
    page = audit.list_events(session, flt, page=parse_page(params.get("page")), per_page=PER_PAGE)
    active: dict[str, str | int | None] = {k: v for k, v in chosen.items() if v}
    return render(
        request,
        "audit/admin_log.html",
        {
            "page": page,
            "chosen": chosen,
            "actions": audit.actions(session),
            "report": audit.verify_chain(session) if params.get("verify") else None,
            "page_url": lambda n: with_query("/admin/audit", **{**active, "page": n}),
            "verify_url": with_query("/admin/audit", **{**active, "verify": 1}),
            "section": "audit",
        },
    )


@router.get("/publish/{org}/-/audit")
def org_log(request: Request, org: str, session: DbSession, account: RequiredAccount) -> Response:
    """The organization's own audit events (owners)."""
    organization = accounts.get_organization(session, org)
    if not accounts.has_role(session, account, organization, "viewer"):
        raise NotFound(f"No organization named '{org}'")
    accounts.require_role(session, account, organization, "owner")
    flt = audit.AuditFilter(org_id=organization.id)
    page = audit.list_events(
        session, flt, page=parse_page(request.query_params.get("page")), per_page=PER_PAGE
    )
    return render(
        request,
        "audit/org_log.html",
        {
            "org": organization,
            "page": page,
            "page_url": lambda n: with_query(f"/publish/{organization.slug}/-/audit", page=n),
        },
    )
