"""Reading the audit trail: admins for the organization; patients for accesses to their own record.

The search itself is audited (purpose operations), and attributed to a patient only when entries about
them were returned and the patient is the organization's own."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Reach, Resource
from telecare.audit import service as audit
from telecare.audit.models import AuditAction, AuditEntry, Purpose
from telecare.auth.principal import Principal
from telecare.identity.models import Patient


async def search_audit_events(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int | None = None,
    since: datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Audit entries, newest first."""
    reach = access.reach_for(principal, Resource.AUDIT_EVENT, Action.SEARCH)
    stmt = select(AuditEntry).where(AuditEntry.org_id == principal.org_id)
    if reach is Reach.OWN:
        stmt = stmt.where(AuditEntry.patient_id == (principal.patient_id or -1))
    if patient_id is not None:
        stmt = stmt.where(AuditEntry.patient_id == patient_id)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    rows = list((await session.execute(stmt.order_by(AuditEntry.id.desc()).limit(limit))).scalars())
    # A filter on a patient outside the caller's reach (or one only named by this organization's refused
    # attempts) must not appear in that patient's accounting of disclosures.
    returned = (
        patient_id is not None
        and any(row.patient_id == patient_id for row in rows)
        and (
            await session.execute(
                select(Patient.id).where(Patient.id == patient_id, Patient.org_id == principal.org_id)
            )
        ).first()
        is not None
    )
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction.SEARCH,
        resource_type=str(Resource.AUDIT_EVENT),
        patient_id=patient_id if returned else None,
        purpose=Purpose.OPERATIONS,
        detail={"count": len(rows), "patient_filter": patient_id is not None},
    )
    return rows
