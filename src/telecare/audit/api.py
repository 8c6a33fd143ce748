"""Reading the audit trail: admins for the organization; patients for accesses to their own record."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from telecare.audit import queries
from telecare.audit.models import AuditEntry
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.params import MAX_ID
from telecare.identity.schemas import AuditEventRead

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit-events", response_model=list[AuditEventRead])
async def search_audit(
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[AuditEntry]:
    """Audit entries, newest first. Patients see who accessed their own record."""
    return await queries.search_audit_events(
        session, principal, patient_id=patient_id, since=since, limit=limit, before_id=before_id
    )
