"""``/api/v1/me/notifications/sales``: how the caller hears of each of its organizations'
sales (a mail per sale, a daily digest, or none): ``store.billing.sale_notices``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from store.accounts.caller import CurrentAccount
from store.billing import sale_notices
from store.deps import DbSession

router = APIRouter(tags=["notifications"])


class SaleNoticeOut(BaseModel):
    organization: str = Field(description="the organization's slug")
    mode: str = Field(description="each: a mail per sale; daily: one digest a day; none")


class SaleNoticeIn(BaseModel):
    mode: Literal["each", "daily", "none"]


def _out(choice: sale_notices.Choice) -> SaleNoticeOut:
    return SaleNoticeOut(organization=choice.organization.slug, mode=choice.mode)


@router.get("/me/notifications/sales", response_model=list[SaleNoticeOut])
def list_sale_notices(account: CurrentAccount, session: DbSession) -> list[SaleNoticeOut]:
    """The organizations whose sales the caller hears of (as an owner or finance member),
    and how."""
    return [_out(c) for c in sale_notices.choices(session, account)]


@router.put("/me/notifications/sales/{organization}", response_model=SaleNoticeOut)
def set_sale_notices(
    organization: str, body: SaleNoticeIn, account: CurrentAccount, session: DbSession
) -> SaleNoticeOut:
    """Choose a mail per sale, one daily digest (``store mail digests``) or none."""
    return _out(
        sale_notices.choose(session, account=account, organization=organization, mode=body.mode)
    )
