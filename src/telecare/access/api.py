"""Break-the-glass routes."""

from __future__ import annotations

from fastapi import APIRouter

from telecare.access import flows
from telecare.access.models import BreakGlassGrant
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.identity.schemas import BreakGlassRead, BreakGlassRequest

router = APIRouter(prefix="/api/v1", tags=["access"])


def _read(grant: BreakGlassGrant) -> BreakGlassRead:
    return BreakGlassRead(
        id=grant.id,
        patient_id=grant.patient_id,
        user_id=grant.user_id,
        created_at=grant.created_at,
        expires_at=grant.expires_at,
    )


@router.post("/patients/{patient_id}/break-glass", response_model=BreakGlassRead, status_code=201)
async def break_glass(
    patient_id: int, body: BreakGlassRequest, session: DbSession, principal: CurrentPrincipal
) -> BreakGlassRead:
    """Emergency access to a patient outside your care relationship: give the reason and re-enter your
    password. Lasts at most 60 minutes, is audited as emergency treatment and notifies the privacy contact."""
    grant = await flows.break_the_glass(
        session, principal, patient_id=patient_id, reason=body.reason, password=body.password
    )
    return _read(grant)


@router.get("/break-glass", response_model=list[BreakGlassRead])
async def list_break_glass(session: DbSession, principal: CurrentPrincipal) -> list[BreakGlassRead]:
    """Emergency accesses in the organization, newest first (privacy review; admins)."""
    return [_read(grant) for grant, _user in await flows.list_emergency_accesses(session, principal)]
