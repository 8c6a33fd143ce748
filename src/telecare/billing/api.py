"""REST routes for billing review."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.billing import service
from telecare.billing.models import BillingLine, BillingLineStatus
from telecare.core.params import PathId

router = APIRouter(prefix="/api/v1", tags=["billing"])


class BillingLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    appointment_id: int
    patient_id: int
    practitioner_id: int
    service_date: datetime
    cpt_code: str | None
    modifiers: list[str]
    place_of_service: str
    units: int
    status: BillingLineStatus
    rationale: list[str]
    facts: dict[str, Any]


class BillingLineAdjust(BaseModel):
    reason: str = Field(min_length=5, max_length=500)
    cpt_code: str | None = Field(default=None, max_length=5)
    place_of_service: str | None = Field(default=None, max_length=2)
    modifiers: list[str] | None = Field(default=None, max_length=4)
    status: BillingLineStatus | None = None


def _read(line: BillingLine) -> BillingLineRead:
    return BillingLineRead.model_validate(line)


@router.get("/billing/lines", response_model=list[BillingLineRead])
async def lines(
    session: DbSession,
    principal: CurrentPrincipal,
    status: BillingLineStatus | None = BillingLineStatus.PROPOSED,
) -> list[BillingLineRead]:
    """Billing lines to review (coordinators see the organization; clinicians their patients)."""
    return [_read(x) for x in await service.lines_for_review(session, principal, status=status)]


@router.get("/visits/{appointment_id}/billing", response_model=list[BillingLineRead])
async def visit_lines(
    appointment_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> list[BillingLineRead]:
    """The billing lines of one visit."""
    return [
        _read(x) for x in await service.lines_for_visit(session, principal, appointment_id=appointment_id)
    ]


@router.patch("/billing/lines/{line_id}", response_model=BillingLineRead)
async def adjust(
    line_id: PathId, body: BillingLineAdjust, session: DbSession, principal: CurrentPrincipal
) -> BillingLineRead:
    """Adjust, approve or void a proposed line; the reason is kept with every change."""
    line = await service.adjust_line(
        session,
        principal,
        line_id=line_id,
        change=service.Adjustment(body.cpt_code, body.place_of_service, body.modifiers, body.status),
        reason=body.reason,
    )
    return _read(line)
