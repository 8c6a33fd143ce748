"""REST routes for check-in, the visit state machine, notes, summary and survey."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.errors import NotFound
from telecare.core.params import PathId
from telecare.visits import notes, service
from telecare.visits.schemas import (
    AddendumCreate,
    CheckIn,
    CheckInResult,
    ConsentCreate,
    ConsentRead,
    ModalitySwitch,
    NoteRead,
    NoteUpdate,
    SurveyCreate,
    VisitEventRead,
)

router = APIRouter(prefix="/api/v1", tags=["visits"])


@router.get("/consent/current", response_model=ConsentRead)
async def current_consent(session: DbSession, principal: CurrentPrincipal) -> ConsentRead:
    """The organization's current telehealth consent text."""
    consent = await service.current_consent(session, principal.org_id)
    if consent is None:
        raise NotFound("No consent text has been published.")
    return ConsentRead.model_validate(consent)


@router.post("/consent", response_model=ConsentRead, status_code=201)
async def publish_consent(
    body: ConsentCreate, session: DbSession, principal: CurrentPrincipal
) -> ConsentRead:
    """Publish a new consent version (administrators)."""
    return ConsentRead.model_validate(
        await service.publish_consent(session, principal, title=body.title, body=body.body)
    )


@router.post("/visits/{appointment_id}/check-in", response_model=CheckInResult)
async def check_in(
    appointment_id: PathId, body: CheckIn, session: DbSession, principal: CurrentPrincipal
) -> CheckInResult:
    """Attest the current location and accept consent. `can_join` false means the licensure gate failed."""
    outcome = await service.check_in(session, principal, appointment_id=appointment_id, data=body)
    return CheckInResult(
        appointment_id=outcome.appointment.id,
        status=outcome.appointment.status,
        can_join=outcome.can_join,
        reasons=list(outcome.reasons),
    )


@router.get("/visits/{appointment_id}/join")
async def can_join(appointment_id: PathId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    """Whether the caller may enter the visit's media room now, and why not."""
    d = await service.can_join(session, principal, appointment_id=appointment_id)
    return {"allowed": d.allowed, "role": str(d.role) if d.role else None, "reason": d.reason}


@router.get("/visits/{appointment_id}/timeline", response_model=list[VisitEventRead])
async def timeline(
    appointment_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> list[VisitEventRead]:
    """Check-in, admission, connections, modality changes, disconnections, end."""
    events = await service.timeline(session, principal, appointment_id=appointment_id)
    return [VisitEventRead.model_validate(e) for e in events]


@router.post("/visits/{appointment_id}/admit", response_model=CheckInResult)
async def admit(appointment_id: PathId, session: DbSession, principal: CurrentPrincipal) -> CheckInResult:
    """The clinician admits the waiting patient."""
    appt = await service.admit(session, principal, appointment_id=appointment_id)
    return CheckInResult(appointment_id=appt.id, status=appt.status, can_join=True, reasons=[])


@router.post("/visits/{appointment_id}/modality", response_model=CheckInResult)
async def switch_modality(
    appointment_id: PathId, body: ModalitySwitch, session: DbSession, principal: CurrentPrincipal
) -> CheckInResult:
    """Switch between video and audio-only, with the reason."""
    appt = await service.switch_modality(
        session, principal, appointment_id=appointment_id, to_modality=body.to_modality, reason=body.reason
    )
    return CheckInResult(appointment_id=appt.id, status=appt.status, can_join=True, reasons=[])


@router.post("/visits/{appointment_id}/end", response_model=CheckInResult)
async def end_visit(appointment_id: PathId, session: DbSession, principal: CurrentPrincipal) -> CheckInResult:
    """The clinician ends the visit."""
    appt = await service.end_visit(session, principal, appointment_id=appointment_id)
    return CheckInResult(appointment_id=appt.id, status=appt.status, can_join=False, reasons=[])


@router.get("/visits/{appointment_id}/note", response_model=NoteRead)
async def read_note(appointment_id: PathId, session: DbSession, principal: CurrentPrincipal) -> NoteRead:
    """The visit note; for its clinician, before the first save, an empty draft with a null id."""
    return NoteRead.model_validate(await notes.open_note(session, principal, appointment_id=appointment_id))


@router.patch("/visits/{appointment_id}/note", response_model=NoteRead)
async def update_note(
    appointment_id: PathId, body: NoteUpdate, session: DbSession, principal: CurrentPrincipal
) -> NoteRead:
    """Edit the draft note (refused once signed)."""
    return NoteRead.model_validate(
        await notes.update_note(session, principal, appointment_id=appointment_id, data=body)
    )


@router.post("/visits/{appointment_id}/note/sign", response_model=NoteRead)
async def sign_note(appointment_id: PathId, session: DbSession, principal: CurrentPrincipal) -> NoteRead:
    """Sign: refused (422, each missing element named) until every telehealth element is documented."""
    return NoteRead.model_validate(await notes.sign_note(session, principal, appointment_id=appointment_id))


@router.post("/visits/{appointment_id}/note/addenda", status_code=201)
async def add_addendum(
    appointment_id: PathId, body: AddendumCreate, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Add an addendum to a signed note."""
    a = await notes.add_addendum(session, principal, appointment_id=appointment_id, text=body.text)
    return {"id": a.id, "created_at": a.created_at.isoformat()}


@router.get("/visits/{appointment_id}/summary")
async def summary(appointment_id: PathId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    """The patient's visit summary: plan and follow-up from the signed note."""
    s = await notes.visit_summary(session, principal, appointment_id=appointment_id)
    return {
        "appointment_id": s.appointment.id,
        "practitioner": s.practitioner_name,
        "plan": s.plan,
        "in_person_followup": s.in_person_followup,
        "summary": s.summary,
        "signed_at": s.signed_at.isoformat() if s.signed_at else None,
        "survey_done": s.survey_done,
    }


@router.post("/visits/{appointment_id}/survey", status_code=201)
async def survey(
    appointment_id: PathId, body: SurveyCreate, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Answer the post-visit satisfaction survey (once)."""
    row = await notes.submit_survey(
        session,
        principal,
        appointment_id=appointment_id,
        rating=body.rating,
        would_recommend=body.would_recommend,
        comment=body.comment,
    )
    return {"id": row.id, "submitted_at": row.submitted_at.isoformat()}
