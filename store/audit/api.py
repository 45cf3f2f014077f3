"""JSON API: the audit log for administrators, and each organization's own events."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query

from store.accounts import service as accounts
from store.accounts.caller import AdminAccount, CurrentAccount
from store.audit import service as audit
from store.audit.schemas import AuditEventOut, AuditPage, ChainReportOut
from store.deps import DbSession
from store.errors import NotFound

router = APIRouter(tags=["audit"])


def _page(session: DbSession, flt: audit.AuditFilter, page: int, per_page: int) -> AuditPage:
    result = audit.list_events(session, flt, page=page, per_page=per_page)
    return AuditPage(
        items=[AuditEventOut.model_validate(e) for e in result.items],
        page=result.page,
        per_page=result.per_page,
        total=result.total,
    )


@router.get("/admin/audit", response_model=AuditPage, tags=["admin"])
def admin_audit(
    admin: AdminAccount,
    session: DbSession,
    action: str = "",
    actor: str = "",
    org: str = "",
    target_type: str = "",
    target_id: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = Query(default=1, ge=1, le=100_000),
    per_page: int = Query(default=50, ge=1, le=500),
) -> AuditPage:
    """Every audited action, newest first. `action` is exact, or a prefix ending in '.'."""
    org_id = accounts.get_organization(session, org).id if org else None
    flt = audit.AuditFilter(
        action=action,
        actor=actor,
        org_id=org_id,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )
    return _page(session, flt, page, per_page)


@router.get("/admin/audit/verify", response_model=ChainReportOut, tags=["admin"])
def verify(admin: AdminAccount, session: DbSession) -> ChainReportOut:
    """Re-check the whole hash chain (as `store audit verify` does)."""
    return ChainReportOut(**audit.verify_chain(session).as_dict())


@router.get("/orgs/{org}/audit", response_model=AuditPage)
def org_audit(
    org: str,
    account: CurrentAccount,
    session: DbSession,
    action: str = "",
    page: int = Query(default=1, ge=1, le=100_000),
    per_page: int = Query(default=50, ge=1, le=500),
) -> AuditPage:
    """The organization's own audit events (owners)."""
    organization = accounts.get_organization(session, org)
    if not accounts.has_role(session, account, organization, "viewer"):
        raise NotFound(f"No organization named '{org}'")
    accounts.require_role(session, account, organization, "owner")
    return _page(session, audit.AuditFilter(action=action, org_id=organization.id), page, per_page)
