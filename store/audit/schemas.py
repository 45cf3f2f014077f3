"""API shapes for the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    org_id: uuid.UUID | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    page: int
    per_page: int
    total: int


class ChainReportOut(BaseModel):
    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str
