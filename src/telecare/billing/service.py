"""Billing lines: proposed when a visit note is signed, reviewed and adjusted (with a reason) by
coordinators. Every adjustment is kept with who, when, from, to and why."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Resource
from telecare.access.service import patient_scope, record_access, record_search
from telecare.auth.principal import Principal
from telecare.billing.models import BillingAdjustment, BillingLine, BillingLineStatus
from telecare.billing.rules import (
    EM_ESTABLISHED_PATIENT,
    EM_NEW_PATIENT,
    MODIFIER_AUDIO_ONLY,
    MODIFIER_AUDIO_VIDEO,
    POS_OFFICE,
    POS_TELEHEALTH_HOME,
    POS_TELEHEALTH_OTHER,
    EncounterFacts,
    derive,
)
from telecare.core.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.scheduling.models import Appointment

ALLOWED_CODES = frozenset(c for _, c in EM_NEW_PATIENT + EM_ESTABLISHED_PATIENT) | {"99211"}
ALLOWED_POS = frozenset({POS_TELEHEALTH_HOME, POS_TELEHEALTH_OTHER, POS_OFFICE})
ALLOWED_MODIFIERS = frozenset({MODIFIER_AUDIO_VIDEO, MODIFIER_AUDIO_ONLY})


class BillingLineNotFound(NotFound):
    code = "billing_line_not_found"
    title = "Billing line not found"


class BillingLineClosed(Conflict):
    """Approved or void lines are not adjusted."""

    code = "billing_line_closed"
    title = "The billing line is closed"


async def propose_lines(
    session: AsyncSession, principal: Principal, *, appointment: Appointment, facts: EncounterFacts
) -> BillingLine:
    """Derive and store the proposed line for a signed visit (called by visits.notes.sign_note)."""
    result = derive(facts)
    line = BillingLine(
        org_id=appointment.org_id,
        appointment_id=appointment.id,
        patient_id=appointment.patient_id,
        practitioner_id=appointment.practitioner_id,
        service_date=appointment.start_at,
        cpt_code=result.cpt_code,
        modifiers=list(result.modifiers),
        place_of_service=result.place_of_service,
        units=1,
        status=BillingLineStatus.PROPOSED,
        rationale=[*result.rationale, *(f"Warning: {w}" for w in result.warnings)],
        facts={
            "patient_kind": facts.patient_kind,
            "total_minutes": facts.total_minutes,
            "location_type": facts.location_type,
            "booked_modality": facts.booked_modality,
            "video_minutes": facts.minutes.video,
            "audio_minutes": facts.minutes.audio,
            "audio_only_reason": facts.audio_only_reason,
        },
    )
    session.add(line)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.BILLING_LINE,
        action=Action.CREATE,
        patient_id=appointment.patient_id,
        resource_id=line.id,
        detail={"cpt": line.cpt_code, "pos": line.place_of_service, "modifiers": line.modifiers},
    )
    return line


async def lines_for_review(
    session: AsyncSession,
    principal: Principal,
    *,
    status: BillingLineStatus | None = BillingLineStatus.PROPOSED,
) -> list[BillingLine]:
    scope = patient_scope(principal, Resource.BILLING_LINE, Action.SEARCH)
    stmt = select(BillingLine).where(
        BillingLine.org_id == principal.org_id, BillingLine.patient_id.in_(scope.scalar_subquery())
    )
    if status is not None:
        stmt = stmt.where(BillingLine.status == status)
    rows = list((await session.execute(stmt.order_by(BillingLine.service_date.desc()).limit(500))).scalars())
    await record_search(
        session,
        principal,
        resource=Resource.BILLING_LINE,
        patient_ids=[r.patient_id for r in rows],
        query={"status": str(status) if status else None},
    )
    return rows


async def lines_for_visit(
    session: AsyncSession, principal: Principal, *, appointment_id: int
) -> list[BillingLine]:
    from telecare.scheduling.service import load_appointment

    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.BILLING_LINE, action=Action.READ
    )
    rows = await session.execute(
        select(BillingLine).where(BillingLine.appointment_id == appt.id).order_by(BillingLine.id)
    )
    return list(rows.scalars())


async def _line(session: AsyncSession, principal: Principal, line_id: int) -> BillingLine:
    scope = patient_scope(principal, Resource.BILLING_LINE, Action.UPDATE)
    line = (
        await session.execute(
            select(BillingLine)
            .where(
                BillingLine.id == line_id,
                BillingLine.org_id == principal.org_id,
                BillingLine.patient_id.in_(scope.scalar_subquery()),
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    if line is None:
        raise BillingLineNotFound()
    return line


@dataclass(frozen=True)
class Adjustment:
    cpt_code: str | None = None
    place_of_service: str | None = None
    modifiers: list[str] | None = None
    status: BillingLineStatus | None = None


async def adjust_line(
    session: AsyncSession, principal: Principal, *, line_id: int, change: Adjustment, reason: str
) -> BillingLine:
    """Coordinator review: change code, POS, modifiers, or approve / void, always with a reason."""
    if not rules.reviews_billing(principal):
        raise Forbidden("Billing review is for coordinators.")
    line = await _line(session, principal, line_id)
    if line.status != BillingLineStatus.PROPOSED:
        raise BillingLineClosed()
    reason = reason.strip()
    errors = []
    if len(reason) < 5:
        errors.append(FieldError("reason", "Give the reason for the change (at least 5 characters)."))
    if change.cpt_code is not None and change.cpt_code not in ALLOWED_CODES:
        errors.append(FieldError("cpt_code", "Not an office/outpatient E/M code (99202-99205, 99211-99215)."))
    if change.place_of_service is not None and change.place_of_service not in ALLOWED_POS:
        errors.append(FieldError("place_of_service", "Use 10 (home), 02 (other than home) or 11 (office)."))
    if change.modifiers is not None and not set(change.modifiers) <= ALLOWED_MODIFIERS:
        errors.append(
            FieldError("modifiers", "Telehealth modifiers are 95 (audio-video) and 93 (audio-only).")
        )
    if errors:
        raise ValidationFailed(errors=errors)
    now = utc_now()
    diffs: list[tuple[str, str | None, str | None]] = []
    if change.cpt_code is not None and change.cpt_code != line.cpt_code:
        diffs.append(("cpt_code", line.cpt_code, change.cpt_code))
        line.cpt_code = change.cpt_code
    if change.place_of_service is not None and change.place_of_service != line.place_of_service:
        diffs.append(("place_of_service", line.place_of_service, change.place_of_service))
        line.place_of_service = change.place_of_service
    if change.modifiers is not None and sorted(change.modifiers) != sorted(line.modifiers):
        diffs.append(("modifiers", ",".join(line.modifiers), ",".join(change.modifiers)))
        line.modifiers = sorted(set(change.modifiers))
    if change.status is not None and change.status != line.status:
        diffs.append(("status", str(line.status), str(change.status)))
        line.status = change.status
    if not diffs:
        raise ValidationFailed(errors=[FieldError("change", "Nothing to change.")])
    for field_name, old, new in diffs:
        session.add(
            BillingAdjustment(
                line_id=line.id,
                field=field_name,
                old_value=old,
                new_value=new,
                reason=reason,
                user_id=principal.user_id,
                at=now,
            )
        )
    line.updated_at = now
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.BILLING_LINE,
        action=Action.UPDATE,
        patient_id=line.patient_id,
        resource_id=line.id,
        detail={"changes": [list(d) for d in diffs]},
    )
    return line


async def adjustments(session: AsyncSession, line_id: int) -> list[BillingAdjustment]:
    rows = await session.execute(
        select(BillingAdjustment).where(BillingAdjustment.line_id == line_id).order_by(BillingAdjustment.id)
    )
    return list(rows.scalars())
