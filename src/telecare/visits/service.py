"""Check-in (location attestation, telehealth consent, licensure re-check) and the visit state machine.

States (scheduling.models.AppointmentStatus) and the functions that move between them:

    booked --check_in--> checked_in --enter_waiting_room--> waiting --admit--> in_progress
    checked_in --admit--> in_progress --end_visit--> completed
    booked|checked_in --(clock, grace period)--> noshow;  booked|checked_in --cancel--> cancelled

While in_progress: mark_connected, switch_modality(to, reason), record_disconnect, record_reconnect.
Every function writes a timeline event (VisitEvent), audits in the same transaction, and publishes
`visit.<id>` / `visits.practitioner.<id>` after commit. `can_join` is the one check the signaling server
calls before letting a browser into a visit's room.

When the licensure gate fails at check-in (the attested state is not covered on the visit date) the
attestation is kept, the visit stays `booked` and is flagged (`licensure_blocked_at`): nobody can join, the
patient is told why, and coordinators see it in their re-assignment list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Resource
from telecare.access.service import reach_for, record_access
from telecare.auth.principal import Principal
from telecare.core.errors import Conflict, FieldError, Forbidden, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Practitioner, User
from telecare.licensure import service as licensure
from telecare.scheduling.availability import get_policy
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality
from telecare.scheduling.service import load_appointment, publish_visit_change, visit_date
from telecare.visits.models import (
    CheckInAttestation,
    ConsentAcceptance,
    ConsentText,
    ModalityChangeReason,
    ParticipantRole,
    VisitEvent,
    VisitEventKind,
    VisitParticipant,
)
from telecare.visits.schemas import CheckIn


class CheckInNotOpen(Conflict):
    """Check-in opens a configured time before the visit and closes when the slot ends."""

    code = "check_in_not_open"
    title = "Check-in is not open"


class InvalidVisitTransition(Conflict):
    """The visit is not in a state that allows this step (e.g. admitting a visit that has ended)."""

    code = "invalid_visit_transition"
    title = "Not possible at this point of the visit"


class ConsentOutdated(ValidationFailed):
    """The consent version shown to the patient is no longer the organization's current one."""

    code = "consent_outdated"
    title = "The consent text has changed"


class VisitBlockedByLicensure(Forbidden):
    """The practitioner is not licensed in the state the patient attested; nobody can join."""

    code = "visit_blocked_licensure"
    title = "This visit cannot take place with this clinician"


JOINABLE = (AppointmentStatus.CHECKED_IN, AppointmentStatus.WAITING, AppointmentStatus.IN_PROGRESS)
AUDIO_REASONS = (
    ModalityChangeReason.PATIENT_LACKS_VIDEO,
    ModalityChangeReason.PATIENT_DECLINED_VIDEO,
    ModalityChangeReason.CONNECTION_QUALITY,
)


# ---- consent -----------------------------------------------------------------------------------------


async def current_consent(session: AsyncSession, org_id: int) -> ConsentText | None:
    return (
        await session.execute(
            select(ConsentText)
            .where(ConsentText.org_id == org_id)
            .order_by(ConsentText.version.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def publish_consent(
    session: AsyncSession, principal: Principal, *, title: str, body: str
) -> ConsentText:
    """A new version of the organization's telehealth consent (texts are never edited in place)."""
    reach_for(principal, Resource.CONSENT_TEXT, Action.CREATE)
    latest = await current_consent(session, principal.org_id)
    text = ConsentText(
        org_id=principal.org_id,
        version=(latest.version + 1) if latest else 1,
        title=title,
        body=body,
        published_at=utc_now(),
        published_by_user_id=principal.user_id,
    )
    session.add(text)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.CONSENT_TEXT,
        action=Action.CREATE,
        patient_id=None,
        resource_id=text.id,
        detail={"version": text.version},
    )
    return text


# ---- helpers -----------------------------------------------------------------------------------------


async def _event(
    session: AsyncSession,
    principal: Principal | None,
    appt: Appointment,
    kind: VisitEventKind,
    *,
    at: datetime | None = None,
    participant_id: int | None = None,
    from_modality: str | None = None,
    to_modality: str | None = None,
    reason: str | None = None,
    detail: dict[str, object] | None = None,
) -> VisitEvent:
    event = VisitEvent(
        appointment_id=appt.id,
        kind=kind,
        at=at or utc_now(),
        actor_user_id=principal.user_id if principal else None,
        participant_id=participant_id,
        from_modality=from_modality,
        to_modality=to_modality,
        reason=reason,
        detail=detail,
    )
    session.add(event)
    await session.flush()
    if principal is not None:
        await record_access(
            session,
            principal,
            resource=Resource.VISIT,
            action=Action.UPDATE,
            patient_id=appt.patient_id,
            resource_id=appt.id,
            detail={"event": str(kind), **({"to": to_modality, "reason": reason} if to_modality else {})},
        )
    publish_visit_change(session, appt, str(kind), event_id=event.id)
    return event


def _require_status(appt: Appointment, *allowed: AppointmentStatus) -> None:
    if appt.status not in allowed:
        raise InvalidVisitTransition(f"The visit is {appt.status}.")


def _require_own_practitioner(principal: Principal, appt: Appointment) -> None:
    if not rules.is_visit_clinician(principal, practitioner_id=appt.practitioner_id):
        raise Forbidden("Only the visit's clinician can do this.")


def _require_own_patient(principal: Principal, appt: Appointment) -> None:
    if not rules.is_the_patient(principal, patient_id=appt.patient_id):
        raise Forbidden("Only the patient can do this.")


async def _participant(
    session: AsyncSession, appt: Appointment, role: ParticipantRole, user_id: int
) -> VisitParticipant:
    row = (
        await session.execute(
            select(VisitParticipant).where(
                VisitParticipant.appointment_id == appt.id,
                VisitParticipant.user_id == user_id,
                VisitParticipant.role == role,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        user = await session.get(User, user_id)
        row = VisitParticipant(
            appointment_id=appt.id,
            role=role,
            user_id=user_id,
            display_name=user.display_name if user else f"user {user_id}",
        )
        session.add(row)
        await session.flush()
    return row


# ---- check-in ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckInWindow:
    opens_at: datetime
    closes_at: datetime

    def is_open(self, now: datetime) -> bool:
        return self.opens_at <= now < self.closes_at


async def check_in_window(session: AsyncSession, appt: Appointment) -> CheckInWindow:
    policy = await get_policy(session, appt.org_id)
    return CheckInWindow(appt.start_at - timedelta(minutes=policy.checkin_opens_minutes), appt.end_at)


@dataclass(frozen=True)
class CheckInOutcome:
    appointment: Appointment
    can_join: bool
    reasons: tuple[str, ...]


async def check_in(
    session: AsyncSession, principal: Principal, *, appointment_id: int, data: CheckIn
) -> CheckInOutcome:
    """The patient attests where they are now and accepts the current consent; the licensure gate runs
    against the attested state. A failed gate is stored (not raised) so the flag survives the request."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT, action=Action.UPDATE, lock=True
    )
    _require_own_patient(principal, appt)
    _require_status(appt, AppointmentStatus.BOOKED, AppointmentStatus.CHECKED_IN)
    if appt.modality == Modality.IN_PERSON:
        raise InvalidVisitTransition("In-person visits are checked in at the front desk.")
    now = utc_now()
    window = await check_in_window(session, appt)
    if not window.is_open(now):
        raise CheckInNotOpen(
            f"Check-in opens at {window.opens_at.isoformat()} and closes at {window.closes_at.isoformat()}.",
            extra={"opens_at": window.opens_at.isoformat()},
        )
    consent = await current_consent(session, appt.org_id)
    if not data.consent_accepted:
        raise ValidationFailed(
            errors=[FieldError("consent_accepted", "The telehealth consent must be accepted.")]
        )
    if consent is None or consent.id != data.consent_text_id:
        raise ConsentOutdated(
            errors=[FieldError("consent_text_id", "Please read the current consent text and accept it.")]
        )
    attestation = (
        await session.execute(select(CheckInAttestation).where(CheckInAttestation.appointment_id == appt.id))
    ).scalar_one_or_none()
    if attestation is None:
        attestation = CheckInAttestation(appointment_id=appt.id, patient_id=appt.patient_id)
        session.add(attestation)
    attestation.location_type = data.location_type
    attestation.address_line = data.address_line
    attestation.city = data.city
    attestation.state = data.state
    attestation.postal_code = data.postal_code
    attestation.callback_phone = data.callback_phone
    attestation.attested_by_user_id = principal.user_id
    attestation.attested_at = now
    accepted = (
        await session.execute(
            select(ConsentAcceptance).where(
                ConsentAcceptance.appointment_id == appt.id, ConsentAcceptance.consent_text_id == consent.id
            )
        )
    ).scalar_one_or_none()
    if accepted is None:
        session.add(
            ConsentAcceptance(
                appointment_id=appt.id,
                patient_id=appt.patient_id,
                consent_text_id=consent.id,
                version=consent.version,
                accepted_by_user_id=principal.user_id,
                accepted_at=now,
            )
        )
    await session.flush()
    participant = await _participant(session, appt, ParticipantRole.PATIENT, principal.user_id)
    practitioner = await session.get(Practitioner, appt.practitioner_id)
    assert practitioner is not None
    gate = await licensure.gate(
        session,
        practitioner_id=appt.practitioner_id,
        state=data.state,
        on=visit_date(appt.start_at, practitioner),
    )
    if gate.authority is None:
        appt.licensure_blocked_at = now
        appt.licensure_block_state = data.state
        appt.status = AppointmentStatus.BOOKED
        await _event(
            session,
            principal,
            appt,
            VisitEventKind.LICENSURE_BLOCKED,
            participant_id=participant.id,
            detail={"state": data.state, "reasons": list(gate.reasons)},
        )
        return CheckInOutcome(appt, False, (patient_block_message(data.state), *gate.reasons))
    appt.licensure_blocked_at = None
    appt.licensure_block_state = None
    if appt.status == AppointmentStatus.BOOKED:
        appt.status = AppointmentStatus.CHECKED_IN
        await _event(
            session,
            principal,
            appt,
            VisitEventKind.CHECKED_IN,
            participant_id=participant.id,
            detail={
                "state": data.state,
                "location_type": str(data.location_type),
                "consent": consent.version,
            },
        )
    return CheckInOutcome(appt, True, ())


def patient_block_message(state: str) -> str:
    return (
        f"Your clinician is not licensed to treat you while you are in {state}, so this visit cannot go "
        "ahead with them. Clinicians must be licensed in the state where you are during the visit. Our "
        "coordinators have been alerted and will move your visit to a licensed colleague or contact you."
    )


# ---- joining and the state machine -------------------------------------------------------------------


@dataclass(frozen=True)
class JoinDecision:
    allowed: bool
    role: ParticipantRole | None
    appointment: Appointment | None
    reason: str | None


NOT_ADMITTED = "The clinician has not admitted the patient yet."


async def may_enter_room(session: AsyncSession, principal: Principal, *, appointment_id: int) -> JoinDecision:
    """May this signed-in user be in the visit's media room now: `can_join`, and the clinician has admitted
    the patient (the visit is in progress). The call page and the signaling socket both ask this."""
    decision = await can_join(session, principal, appointment_id=appointment_id)
    appt = decision.appointment
    if decision.allowed and appt is not None and appt.status != AppointmentStatus.IN_PROGRESS:
        return JoinDecision(False, decision.role, appt, NOT_ADMITTED)
    return decision


async def can_join(session: AsyncSession, principal: Principal, *, appointment_id: int) -> JoinDecision:
    """May this signed-in user enter the visit's media room now? The patient once checked in; the visit's
    own clinician from check-in on; nobody while the licensure gate blocks the visit or after it ended.
    Raises AppointmentNotFound (404) outside the caller's reach. Guests (interpreter, caregiver) join by
    invitation token, not by this check."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT, action=Action.READ
    )
    if rules.is_the_patient(principal, patient_id=appt.patient_id):
        role = ParticipantRole.PATIENT
    elif rules.is_visit_clinician(principal, practitioner_id=appt.practitioner_id):
        role = ParticipantRole.PRACTITIONER
    else:
        return JoinDecision(False, None, appt, "Only the visit's patient and clinician can join.")
    if appt.licensure_blocked_at is not None:
        return JoinDecision(False, role, appt, patient_block_message(appt.licensure_block_state or "??"))
    if appt.status not in JOINABLE:
        return JoinDecision(False, role, appt, f"The visit is {appt.status}.")
    return JoinDecision(True, role, appt, None)


async def enter_waiting_room(
    session: AsyncSession, principal: Principal, *, appointment_id: int
) -> Appointment:
    """checked_in -> waiting, when the patient's waiting-room page connects. Idempotent while waiting."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT, action=Action.UPDATE, lock=True
    )
    _require_own_patient(principal, appt)
    if appt.licensure_blocked_at is not None:
        raise VisitBlockedByLicensure(patient_block_message(appt.licensure_block_state or "??"))
    if appt.status == AppointmentStatus.WAITING:
        return appt
    _require_status(appt, AppointmentStatus.CHECKED_IN)
    appt.status = AppointmentStatus.WAITING
    participant = await _participant(session, appt, ParticipantRole.PATIENT, principal.user_id)
    await _event(session, principal, appt, VisitEventKind.ENTERED_WAITING_ROOM, participant_id=participant.id)
    return appt


async def admit(session: AsyncSession, principal: Principal, *, appointment_id: int) -> Appointment:
    """The clinician admits a checked-in or waiting patient: -> in_progress."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT, action=Action.UPDATE, lock=True
    )
    _require_own_practitioner(principal, appt)
    if appt.licensure_blocked_at is not None:
        raise VisitBlockedByLicensure(
            "The licensure gate blocked this visit; a coordinator must re-assign it."
        )
    _require_status(appt, AppointmentStatus.CHECKED_IN, AppointmentStatus.WAITING)
    appt.status = AppointmentStatus.IN_PROGRESS
    participant = await _participant(session, appt, ParticipantRole.PRACTITIONER, principal.user_id)
    await _event(session, principal, appt, VisitEventKind.ADMITTED, participant_id=participant.id)
    return appt


async def _in_progress_participant(
    session: AsyncSession, principal: Principal, appointment_id: int
) -> tuple[Appointment, VisitParticipant]:
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT, action=Action.UPDATE, lock=True
    )
    if rules.is_patient(principal):
        _require_own_patient(principal, appt)
        role = ParticipantRole.PATIENT
    else:
        _require_own_practitioner(principal, appt)
        role = ParticipantRole.PRACTITIONER
    _require_status(appt, AppointmentStatus.IN_PROGRESS)
    return appt, await _participant(session, appt, role, principal.user_id)


async def mark_connected(session: AsyncSession, principal: Principal, *, appointment_id: int) -> Appointment:
    """Media flows for this participant (first connection). Records `connected`; the first one of the visit
    starts the visit's documented start time."""
    appt, participant = await _in_progress_participant(session, principal, appointment_id)
    now = utc_now()
    if participant.joined_at is None:
        participant.joined_at = now
    await _event(session, principal, appt, VisitEventKind.CONNECTED, at=now, participant_id=participant.id)
    return appt


async def switch_modality(
    session: AsyncSession,
    principal: Principal,
    *,
    appointment_id: int,
    to_modality: Modality,
    reason: ModalityChangeReason,
) -> Appointment:
    """video <-> audio during the visit, with the reason (it decides modifier 93 vs 95 and the audio-only
    documentation rule, docs/billing-visits.md#modifiers, docs/documentation.md#audio-only-condition)."""
    appt, participant = await _in_progress_participant(session, principal, appointment_id)
    if to_modality not in (Modality.VIDEO, Modality.AUDIO):
        raise ValidationFailed(
            errors=[FieldError("to_modality", "A visit switches between video and audio.")]
        )
    if to_modality == appt.modality:
        raise InvalidVisitTransition(f"The visit is already {to_modality}.")
    if to_modality == Modality.AUDIO and reason not in AUDIO_REASONS:
        raise ValidationFailed(
            errors=[
                FieldError("reason", "Say why video is not used: patient lacks video, declined, or quality.")
            ]
        )
    if to_modality == Modality.VIDEO and reason != ModalityChangeReason.VIDEO_RESTORED:
        raise ValidationFailed(
            errors=[FieldError("reason", "Use video_restored when switching back to video.")]
        )
    previous = str(appt.modality)
    appt.modality = to_modality
    await _event(
        session,
        principal,
        appt,
        VisitEventKind.MODALITY_CHANGED,
        participant_id=participant.id,
        from_modality=previous,
        to_modality=str(to_modality),
        reason=str(reason),
    )
    return appt


async def record_disconnect(
    session: AsyncSession, principal: Principal, *, appointment_id: int
) -> Appointment:
    appt, participant = await _in_progress_participant(session, principal, appointment_id)
    participant.left_at = utc_now()
    await _event(session, principal, appt, VisitEventKind.DISCONNECTED, participant_id=participant.id)
    return appt


async def record_reconnect(
    session: AsyncSession, principal: Principal, *, appointment_id: int
) -> Appointment:
    appt, participant = await _in_progress_participant(session, principal, appointment_id)
    participant.left_at = None
    await _event(session, principal, appt, VisitEventKind.RECONNECTED, participant_id=participant.id)
    return appt


async def end_visit(session: AsyncSession, principal: Principal, *, appointment_id: int) -> Appointment:
    """The clinician ends the visit: in_progress -> completed."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT, action=Action.UPDATE, lock=True
    )
    _require_own_practitioner(principal, appt)
    _require_status(appt, AppointmentStatus.IN_PROGRESS)
    appt.status = AppointmentStatus.COMPLETED
    await _event(session, principal, appt, VisitEventKind.ENDED)
    return appt


async def timeline(session: AsyncSession, principal: Principal, *, appointment_id: int) -> list[VisitEvent]:
    await load_appointment(session, principal, appointment_id, resource=Resource.VISIT, action=Action.READ)
    rows = await session.execute(
        select(VisitEvent)
        .where(VisitEvent.appointment_id == appointment_id)
        .order_by(VisitEvent.at, VisitEvent.id)
    )
    return list(rows.scalars())


async def attestation_for(session: AsyncSession, appointment_id: int) -> CheckInAttestation | None:
    return (
        await session.execute(
            select(CheckInAttestation).where(CheckInAttestation.appointment_id == appointment_id)
        )
    ).scalar_one_or_none()


@dataclass(frozen=True)
class QueueEntry:
    appointment: Appointment
    patient_name: str
    waiting_since: datetime | None
    attested_state: str | None


async def clinician_queue(session: AsyncSession, principal: Principal) -> list[QueueEntry]:
    """The clinician's checked-in and waiting patients, with wait time start and attested state."""
    from telecare.access.service import patient_scope, record_search
    from telecare.identity.models import Patient

    if not rules.is_clinician(principal):
        raise Forbidden("Only clinicians have a waiting-room queue.")
    scope = patient_scope(principal, Resource.VISIT, Action.SEARCH)
    rows = (
        await session.execute(
            select(Appointment, Patient.given_name, Patient.family_name, CheckInAttestation.state)
            .join(Patient, Patient.id == Appointment.patient_id)
            .outerjoin(CheckInAttestation, CheckInAttestation.appointment_id == Appointment.id)
            .where(
                Appointment.practitioner_id == principal.practitioner_id,
                Appointment.status.in_((AppointmentStatus.CHECKED_IN, AppointmentStatus.WAITING)),
                Appointment.patient_id.in_(scope.scalar_subquery()),
            )
            .order_by(Appointment.start_at)
        )
    ).all()
    out = []
    for appt, given, family, state in rows:
        since = await session.scalar(
            select(VisitEvent.at)
            .where(
                VisitEvent.appointment_id == appt.id,
                VisitEvent.kind.in_((VisitEventKind.CHECKED_IN, VisitEventKind.ENTERED_WAITING_ROOM)),
            )
            .order_by(VisitEvent.at.desc())
            .limit(1)
        )
        out.append(QueueEntry(appt, f"{given} {family}", since, state))
    await record_search(
        session,
        principal,
        resource=Resource.VISIT,
        patient_ids=[e.appointment.patient_id for e in out],
        query={"queue": True},
    )
    return out
