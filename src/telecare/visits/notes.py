"""Visit documentation: the note with the telehealth elements of docs/documentation.md#required-elements,
signing (which locks the note and proposes billing lines), addenda, the patient's visit summary and the
survey."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Resource
from telecare.access.service import patient_scope, record_access, record_search
from telecare.auth.principal import Principal
from telecare.billing import service as billing
from telecare.billing.rules import (
    AUDIO_ONLY_QUALIFYING_REASONS,
    EncounterFacts,
    ModalityMinutes,
    TimelinePoint,
    connected_minutes,
)
from telecare.core.db import as_uow
from telecare.core.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Practitioner, User
from telecare.scheduling.models import Appointment, AppointmentStatus, PatientKind, VisitType
from telecare.scheduling.service import load_appointment
from telecare.visits.models import (
    CheckInAttestation,
    ConsentAcceptance,
    NoteStatus,
    SurveyResponse,
    VisitEvent,
    VisitEventKind,
    VisitNote,
    VisitNoteAddendum,
    VisitParticipant,
)
from telecare.visits.schemas import NoteUpdate


class NoteLocked(Conflict):
    """A signed note never changes; add an addendum instead."""

    code = "note_locked"
    title = "The note is signed"


class NoteIncomplete(ValidationFailed):
    """A required telehealth documentation element is missing; `errors` names each one."""

    code = "note_incomplete"
    title = "The note cannot be signed yet"


class NoteNotFound(NotFound):
    code = "note_not_found"
    title = "Note not found"


class SurveyNotAvailable(Conflict):
    """The survey opens once the visit is completed, once per visit."""

    code = "survey_not_available"
    title = "Survey not available"


def _require_author(principal: Principal, appt: Appointment) -> None:
    if not rules.is_visit_clinician(principal, practitioner_id=appt.practitioner_id):
        raise Forbidden("Only the visit's clinician writes its note.")


async def _note_row(session: AsyncSession, appointment_id: int) -> VisitNote | None:
    return (
        await session.execute(select(VisitNote).where(VisitNote.appointment_id == appointment_id))
    ).scalar_one_or_none()


async def open_note(session: AsyncSession, principal: Principal, *, appointment_id: int) -> VisitNote:
    """The visit's note. Before its clinician first saves it there is none: reading then shows a new, empty
    draft that is not stored (a read writes nothing but its audit entry, docs/performance.md#sqlite), and a
    writer (the first save) stores it. Readers on the care team get the note if it exists; coordinators are
    refused by the policy (never clinical notes)."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT_NOTE, action=Action.READ
    )
    note = await _note_row(session, appointment_id)
    if note is None:
        if rules.is_patient(principal):
            raise NoteNotFound()
        _require_author(principal, appt)
        note = VisitNote(
            org_id=appt.org_id,
            appointment_id=appt.id,
            patient_id=appt.patient_id,
            practitioner_id=appt.practitioner_id,
            status=NoteStatus.DRAFT,
            identity_verified=False,
        )
        if as_uow(session).read_only:
            return note
        session.add(note)
        await session.flush()
    if rules.is_patient(principal) and note.status != NoteStatus.SIGNED:
        raise NoteNotFound()
    return note


async def update_note(
    session: AsyncSession, principal: Principal, *, appointment_id: int, data: NoteUpdate
) -> VisitNote:
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT_NOTE, action=Action.UPDATE, lock=True
    )
    _require_author(principal, appt)
    note = await open_note(session, principal, appointment_id=appointment_id)
    if note.status == NoteStatus.SIGNED:
        raise NoteLocked()
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        setattr(note, key, str(value) if key == "audio_only_reason" and value is not None else value)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.VISIT_NOTE,
        action=Action.UPDATE,
        patient_id=appt.patient_id,
        resource_id=note.id,
        detail={"fields": sorted(changes)},
    )
    return note


# ---- facts the note documents ------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitFacts:
    """What the platform recorded about the visit (never typed by the clinician)."""

    booked_modality: str
    final_modality: str
    modality_changes: list[dict[str, Any]]
    video_minutes: float
    audio_minutes: float
    started_at: datetime | None  # first media connection
    ended_at: datetime | None
    attestation: CheckInAttestation | None
    consent_version: int | None
    consent_accepted_at: datetime | None
    participants: list[dict[str, Any]]
    patient_kind: str
    practitioner_name: str

    def as_json(self) -> dict[str, object]:
        a = self.attestation
        return {
            "modality": {"booked": self.booked_modality, "final": self.final_modality},
            "modality_changes": self.modality_changes,
            "minutes": {"video": self.video_minutes, "audio": self.audio_minutes},
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "patient_location": None
            if a is None
            else {
                "type": str(a.location_type),
                "address": a.address_line,
                "city": a.city,
                "state": a.state,
                "attested_at": a.attested_at.isoformat(),
            },
            "consent": {"version": self.consent_version, "accepted_at": self.consent_accepted_at.isoformat()}
            if self.consent_accepted_at
            else None,
            "participants": self.participants,
            "patient_kind": self.patient_kind,
            "practitioner": self.practitioner_name,
        }


# CPT and CMS: an established patient "received professional services from the physician/NPP or another
# physician of the same specialty who belongs to the same group practice within the previous 3 years"
# (verified 2026-11-27: AAPC E/M Coding Alert reader question citing the CMS E/M services guide ICN006764;
# AAPC Primary Care Coding Alert quoting CPT). Here: a completed visit in this organization within three
# years with the same practitioner or one sharing a specialty. Services outside Telecare are not seen, so
# the visit type's declared new/established stands unless our own history says established.
NEW_PATIENT_LOOKBACK_DAYS = 3 * 365


async def visit_facts(session: AsyncSession, appt: Appointment) -> VisitFacts:
    events = list(
        (
            await session.execute(
                select(VisitEvent)
                .where(VisitEvent.appointment_id == appt.id)
                .order_by(VisitEvent.at, VisitEvent.id)
            )
        ).scalars()
    )
    attestation = (
        await session.execute(select(CheckInAttestation).where(CheckInAttestation.appointment_id == appt.id))
    ).scalar_one_or_none()
    consent = (
        await session.execute(
            select(ConsentAcceptance)
            .where(ConsentAcceptance.appointment_id == appt.id)
            .order_by(ConsentAcceptance.accepted_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    participants = (
        await session.execute(
            select(VisitParticipant)
            .where(VisitParticipant.appointment_id == appt.id)
            .order_by(VisitParticipant.id)
        )
    ).scalars()
    vt = await session.get(VisitType, appt.visit_type_id)
    declared = str(vt.patient_kind) if vt else str(PatientKind.ESTABLISHED)
    prior = (
        await session.execute(
            select(Practitioner.id, Practitioner.specialties)
            .join(Appointment, Appointment.practitioner_id == Practitioner.id)
            .where(
                Appointment.org_id == appt.org_id,
                Appointment.patient_id == appt.patient_id,
                Appointment.id != appt.id,
                Appointment.status == AppointmentStatus.COMPLETED,
                Appointment.start_at < appt.start_at,
                Appointment.start_at >= appt.start_at - timedelta(days=NEW_PATIENT_LOOKBACK_DAYS),
            )
        )
    ).all()
    this = await session.get(Practitioner, appt.practitioner_id)
    mine = set(this.specialties or []) if this else set()
    seen_before = any(pid == appt.practitioner_id or mine & set(specs or []) for pid, specs in prior)
    kind = str(PatientKind.ESTABLISHED) if seen_before else declared
    points = [
        TimelinePoint(e.at, str(e.kind), e.to_modality)
        for e in events
        if e.kind
        in (
            VisitEventKind.CONNECTED,
            VisitEventKind.MODALITY_CHANGED,
            VisitEventKind.DISCONNECTED,
            VisitEventKind.RECONNECTED,
            VisitEventKind.ENDED,
        )
    ]
    minutes = connected_minutes(str(appt.booked_modality), points)
    connected = [e.at for e in events if e.kind == VisitEventKind.CONNECTED]
    ended = [e.at for e in events if e.kind == VisitEventKind.ENDED]
    author = await practitioner_name(session, appt.practitioner_id)
    return VisitFacts(
        booked_modality=str(appt.booked_modality),
        final_modality=str(appt.modality),
        modality_changes=[
            {"at": e.at.isoformat(), "from": e.from_modality, "to": e.to_modality, "reason": e.reason}
            for e in events
            if e.kind == VisitEventKind.MODALITY_CHANGED
        ],
        video_minutes=minutes.video,
        audio_minutes=minutes.audio,
        started_at=connected[0] if connected else None,
        ended_at=ended[-1] if ended else None,
        attestation=attestation,
        consent_version=consent.version if consent else None,
        consent_accepted_at=consent.accepted_at if consent else None,
        participants=[{"role": str(p.role), "name": p.display_name} for p in participants],
        patient_kind=kind,
        practitioner_name=author or "",
    )


async def practitioner_name(session: AsyncSession, practitioner_id: int) -> str | None:
    return await session.scalar(
        select(User.display_name)
        .join(Practitioner, Practitioner.user_id == User.id)
        .where(Practitioner.id == practitioner_id)
    )


def missing_elements(note: VisitNote, facts: VisitFacts) -> list[FieldError]:
    """docs/documentation.md#required-elements: every required telehealth element, named by the field that
    must be completed."""
    missing: list[FieldError] = []

    def need(ok: object, field: str, message: str) -> None:
        if not ok or (isinstance(ok, str) and not ok.strip()):
            missing.append(FieldError(field, message))

    used_audio = facts.audio_minutes > 0 or (facts.booked_modality == "audio" and facts.video_minutes == 0)
    need(facts.attestation, "patient_location", "The patient's attested location (check-in) is missing.")
    need(facts.consent_version, "consent", "No telehealth consent was accepted for this visit.")
    need(facts.started_at, "started_at", "The visit never connected; there is no start time.")
    need(facts.ended_at, "ended_at", "The visit has not ended.")
    need(note.provider_location_type, "provider_location_type", "State where you were (site or home).")
    need(note.provider_state, "provider_state", "State the state you practised from.")
    need(note.provider_city, "provider_city", "State the city you practised from.")
    need(note.identity_verified, "identity_verified", "Confirm the patient's identity was verified.")
    need(note.identity_method, "identity_method", "Say how identity was verified.")
    need(note.history, "history", "History is required.")
    need(note.exam, "exam", "Exam findings are required.")
    need(note.exam_limitations, "exam_limitations", "State the limitations of the remote exam.")
    need(note.assessment, "assessment", "Assessment is required.")
    need(note.plan, "plan", "Plan is required.")
    need(note.in_person_followup, "in_person_followup", "Say whether and when an in-person visit is needed.")
    need(note.total_minutes, "total_minutes", "Total time on the date of the encounter is required.")
    if used_audio:
        # Medicare audio-only condition (docs/documentation.md#audio-only-condition).
        need(
            note.practitioner_video_capable,
            "practitioner_video_capable",
            "Audio-only: confirm you could do video.",
        )
        reason = note.audio_only_reason or next(
            (c["reason"] for c in facts.modality_changes if c["to"] == "audio"), None
        )
        need(
            reason in AUDIO_ONLY_QUALIFYING_REASONS,
            "audio_only_reason",
            "Audio-only: say why the patient could not or did not consent to video.",
        )
    return missing


async def sign_note(session: AsyncSession, principal: Principal, *, appointment_id: int) -> VisitNote:
    """Sign and lock the note; freeze the recorded facts into it; propose billing lines."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT_NOTE, action=Action.UPDATE, lock=True
    )
    _require_author(principal, appt)
    note = await open_note(session, principal, appointment_id=appointment_id)
    if note.status == NoteStatus.SIGNED:
        raise NoteLocked()
    if appt.status != AppointmentStatus.COMPLETED:
        raise NoteIncomplete(errors=[FieldError("ended_at", "End the visit before signing its note.")])
    facts = await visit_facts(session, appt)
    missing = missing_elements(note, facts)
    if missing:
        raise NoteIncomplete(f"{len(missing)} required element(s) missing.", errors=missing)
    if note.audio_only_reason is None and facts.audio_minutes > 0:
        note.audio_only_reason = next(
            (c["reason"] for c in facts.modality_changes if c["to"] == "audio"), None
        )
    now = utc_now()
    note.status = NoteStatus.SIGNED
    note.signed_at = now
    note.signed_by_user_id = principal.user_id
    note.signed_facts = facts.as_json()
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.VISIT_NOTE,
        action=Action.UPDATE,
        patient_id=appt.patient_id,
        resource_id=note.id,
        detail={"signed": True},
    )
    assert note.total_minutes is not None
    await billing.propose_lines(
        session,
        principal,
        appointment=appt,
        facts=EncounterFacts(
            patient_kind=facts.patient_kind,
            total_minutes=note.total_minutes,
            location_type=str(facts.attestation.location_type) if facts.attestation else None,
            booked_modality=facts.booked_modality,
            minutes=ModalityMinutes(facts.video_minutes, facts.audio_minutes),
            audio_only_reason=note.audio_only_reason,
            practitioner_video_capable=note.practitioner_video_capable,
        ),
    )
    return note


async def add_addendum(
    session: AsyncSession, principal: Principal, *, appointment_id: int, text: str
) -> VisitNoteAddendum:
    """Changes after signing are addenda, authored and timed; the signed note itself never changes."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT_NOTE, action=Action.UPDATE
    )
    if not rules.has_clinical_role(principal):
        raise Forbidden("Only clinicians add addenda.")
    note = await _note_row(session, appt.id)
    if note is None or note.status != NoteStatus.SIGNED:
        raise Conflict("Addenda are for signed notes; edit the draft instead.")
    addendum = VisitNoteAddendum(
        note_id=note.id, author_user_id=principal.user_id, text=text, created_at=utc_now()
    )
    session.add(addendum)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.VISIT_NOTE,
        action=Action.UPDATE,
        patient_id=appt.patient_id,
        resource_id=note.id,
        detail={"addendum": addendum.id},
    )
    return addendum


async def addenda(session: AsyncSession, note_id: int) -> list[tuple[VisitNoteAddendum, str]]:
    rows = await session.execute(
        select(VisitNoteAddendum, User.display_name)
        .join(User, User.id == VisitNoteAddendum.author_user_id)
        .where(VisitNoteAddendum.note_id == note_id)
        .order_by(VisitNoteAddendum.created_at, VisitNoteAddendum.id)
    )
    return [(a, name) for a, name in rows.all()]


# ---- the patient's side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitSummary:
    appointment: Appointment
    practitioner_name: str
    plan: str | None
    in_person_followup: str | None
    summary: str | None
    signed_at: datetime | None
    survey_done: bool


async def visit_summary(session: AsyncSession, principal: Principal, *, appointment_id: int) -> VisitSummary:
    """The patient's view of a completed visit: the plan and summary from the signed note."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT_NOTE, action=Action.READ
    )
    note = await _note_row(session, appt.id)
    signed = note is not None and note.status == NoteStatus.SIGNED
    name = await practitioner_name(session, appt.practitioner_id)
    survey = await session.scalar(select(SurveyResponse.id).where(SurveyResponse.appointment_id == appt.id))
    return VisitSummary(
        appt,
        name or "",
        note.plan if signed and note else None,
        note.in_person_followup if signed and note else None,
        note.patient_summary if signed and note else None,
        note.signed_at if signed and note else None,
        survey is not None,
    )


async def submit_survey(
    session: AsyncSession,
    principal: Principal,
    *,
    appointment_id: int,
    rating: int,
    would_recommend: bool,
    comment: str | None,
) -> SurveyResponse:
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.SURVEY, action=Action.CREATE
    )
    if not rules.is_patient(principal):
        raise Forbidden("Only the patient answers the survey.")
    if appt.status != AppointmentStatus.COMPLETED:
        raise SurveyNotAvailable("The survey opens once the visit has ended.")
    if await session.scalar(select(SurveyResponse.id).where(SurveyResponse.appointment_id == appt.id)):
        raise SurveyNotAvailable("You have already answered this survey. Thank you.")
    row = SurveyResponse(
        org_id=appt.org_id,
        appointment_id=appt.id,
        patient_id=appt.patient_id,
        rating=rating,
        would_recommend=would_recommend,
        comment=comment,
        submitted_at=utc_now(),
    )
    session.add(row)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.SURVEY,
        action=Action.CREATE,
        patient_id=appt.patient_id,
        resource_id=row.id,
    )
    return row


@dataclass(frozen=True)
class SurveyStats:
    responses: int
    mean_rating: float | None
    would_recommend_share: float | None


async def survey_stats(session: AsyncSession, principal: Principal) -> SurveyStats:
    """Organization-wide satisfaction (coordinators): counts and means, no comments, no names."""
    scope = patient_scope(principal, Resource.SURVEY, Action.SEARCH)
    rows = (
        await session.execute(
            select(SurveyResponse.rating, SurveyResponse.would_recommend, SurveyResponse.patient_id).where(
                SurveyResponse.org_id == principal.org_id,
                SurveyResponse.patient_id.in_(scope.scalar_subquery()),
            )
        )
    ).all()
    await record_search(
        session,
        principal,
        resource=Resource.SURVEY,
        patient_ids=[],
        query={"aggregate": True, "n": len(rows)},
    )
    if not rows:
        return SurveyStats(0, None, None)
    return SurveyStats(
        len(rows),
        round(sum(r for r, _, _ in rows) / len(rows), 2),
        round(sum(1 for _, w, _ in rows if w) / len(rows), 2),
    )


# ---- patient export (right of access) ----------------------------------------------------------------


async def export_visits(session: AsyncSession, principal: Principal, patient_id: int) -> list[dict[str, Any]]:
    """The patient's visits for `identity.service.export_patient` (already authorised and audited there):
    appointments, attested locations, consents, timelines, signed notes with addenda, surveys."""
    appts = (
        await session.execute(
            select(Appointment).where(Appointment.patient_id == patient_id).order_by(Appointment.start_at)
        )
    ).scalars()
    out: list[dict[str, Any]] = []
    for appt in appts:
        facts = await visit_facts(session, appt)
        note = await _note_row(session, appt.id)
        survey = (
            await session.execute(select(SurveyResponse).where(SurveyResponse.appointment_id == appt.id))
        ).scalar_one_or_none()
        signed = note is not None and note.status == NoteStatus.SIGNED
        out.append(
            {
                "appointment_id": appt.id,
                "start_at": appt.start_at.isoformat(),
                "end_at": appt.end_at.isoformat(),
                "status": str(appt.status),
                "late_cancel": appt.late_cancel,
                "practitioner": facts.practitioner_name,
                "recorded": facts.as_json(),
                "note": None
                if not signed or note is None
                else {
                    "signed_at": note.signed_at.isoformat() if note.signed_at else None,
                    **{
                        k: getattr(note, k)
                        for k in ("history", "exam", "exam_limitations", "assessment", "plan")
                    },
                    "in_person_followup": note.in_person_followup,
                    "addenda": [
                        {"at": a.created_at.isoformat(), "by": name, "text": a.text}
                        for a, name in await addenda(session, note.id)
                    ],
                },
                "survey": None
                if survey is None
                else {
                    "rating": survey.rating,
                    "would_recommend": survey.would_recommend,
                    "comment": survey.comment,
                },
            }
        )
    return out
