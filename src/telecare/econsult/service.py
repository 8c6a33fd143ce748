"""E-consult actions: a clinician asks a specialty a focused question about a patient; a specialist in that
specialty's queue accepts it, may ask a clarifying question, and answers with an assessment and
recommendations or a recommendation for a visit (docs/econsult.md#workflow).

Every action is `(session, principal, *, ...)`, authorises through the policy (`open_patient` on the
consult's patient, audited), writes, and publishes `econsult.changed` (ids only) after commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.access.service import ReachOf
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.econsult import rules
from telecare.econsult.models import (
    Consult,
    ConsultAttachment,
    ConsultNote,
    ConsultOutcome,
    ConsultQueue,
    ConsultQueueMember,
    ConsultStatus,
    ConsultTimeEntry,
    Urgency,
)
from telecare.files import service as files
from telecare.files.models import StoredFile
from telecare.identity.models import Practitioner, User
from telecare.messaging import rules as messaging_rules
from telecare.messaging import service as messaging
from telecare.notifications import service as notifications
from telecare.scheduling import service as scheduling

TOPIC = "econsult.changed"
MAX_ATTACHMENTS = 5
MAX_TEXT = 10_000
OPEN = (ConsultStatus.REQUESTED, ConsultStatus.IN_PROGRESS, ConsultStatus.ON_HOLD)


class QueueNotFound(NotFound):
    code = "consult_queue_not_found"
    title = "Specialty queue not found"


class ConsultNotFound(NotFound):
    """The consult does not exist or is outside the caller's reach (no existence oracle)."""

    code = "consult_not_found"
    title = "E-consult not found"


class NotInQueue(Forbidden):
    code = "not_a_queue_member"
    title = "Not a specialist of this queue"


class NotTheRequester(Forbidden):
    code = "not_the_requester"
    title = "Only the requesting clinician can do this"


class ConsultStateConflict(Conflict):
    code = "consult_state"
    title = "The e-consult is not in a state that allows this"


@dataclass
class ConsultView:
    consult: Consult
    queue: ConsultQueue
    notes: list[ConsultNote]
    attachments: list[StoredFile]
    names: dict[int, str]
    patient_name: str
    mrn: str
    is_requester: bool
    is_specialist: bool  # a member of the consult's queue
    time: list[ConsultTimeEntry] = field(default_factory=list)


def queue_patients(reach: ReachOf) -> Select[int]:
    """A care relationship: specialists reach the patients of consults in the queues they belong to (and of
    the consults they accepted or answered, after leaving the queue). `reach`'s ids may be bind params."""
    member = select(ConsultQueueMember.queue_id).where(ConsultQueueMember.user_id == reach.user_id)
    return select(Consult.patient_id).where(
        Consult.org_id == reach.org_id,
        or_(
            Consult.queue_id.in_(member.scalar_subquery()),
            Consult.specialist_user_id == reach.user_id,
            Consult.answered_by_user_id == reach.user_id,
        ),
    )


def specialty_membership(user_id: Any, org_id: Any, specialty: str) -> Select[int]:
    """SELECT of the caller's membership in the organization's active queue for `specialty` (empty when
    not a member): other domains whose work a specialty does (dermatology's skin cases) ask it here.
    `user_id` and `org_id` may be bind parameters."""
    return (
        select(ConsultQueueMember.id)
        .join(ConsultQueue, ConsultQueue.id == ConsultQueueMember.queue_id)
        .where(
            ConsultQueueMember.user_id == user_id,
            ConsultQueue.org_id == org_id,
            ConsultQueue.specialty == specialty,
            ConsultQueue.is_active.is_(True),
        )
    )


# ---- queues ----------------------------------------------------------------------------------------------


async def create_queue(
    session: AsyncSession,
    principal: Principal,
    *,
    specialty: str,
    name: str,
    routine_business_days: int = 3,
    org_id: int | None = None,
) -> ConsultQueue:
    access.reach_for(principal, Resource.CONSULT_QUEUE, Action.CREATE)
    errors = []
    if org_id is not None and org_id != principal.org_id:
        errors.append(FieldError("org_id", "queues are created in your own organization"))
    if not specialty or not specialty.replace("-", "").isalnum() or specialty.lower() != specialty:
        errors.append(FieldError("specialty", "lower-case letters, digits and hyphens"))
    if not name.strip():
        errors.append(FieldError("name", "required"))
    if not 1 <= routine_business_days <= 10:
        errors.append(FieldError("routine_business_days", "between 1 and 10"))
    if errors:
        raise ValidationFailed("The queue is not valid.", errors=errors)
    queue = ConsultQueue(
        org_id=principal.org_id,
        specialty=specialty,
        name=name.strip(),
        routine_business_days=routine_business_days,
    )
    try:
        async with session.begin_nested():
            session.add(queue)
            await session.flush()
    except IntegrityError:
        raise ValidationFailed(
            "This specialty has a queue.", errors=[FieldError("specialty", "already has a queue")]
        ) from None
    await access.record_access(
        session,
        principal,
        resource=Resource.CONSULT_QUEUE,
        action=Action.CREATE,
        patient_id=None,
        resource_id=queue.id,
    )
    return queue


async def _queue(session: AsyncSession, principal: Principal, queue_id: int) -> ConsultQueue:
    queue = await session.get(ConsultQueue, queue_id)
    if queue is None or queue.org_id != principal.org_id:
        raise QueueNotFound()
    return queue


async def get_queue(session: AsyncSession, principal: Principal, *, queue_id: int) -> ConsultQueue:
    access.reach_for(principal, Resource.CONSULT_QUEUE, Action.READ)
    return await _queue(session, principal, queue_id)


async def list_queues(session: AsyncSession, principal: Principal) -> list[ConsultQueue]:
    access.reach_for(principal, Resource.CONSULT_QUEUE, Action.SEARCH)
    rows = await session.execute(
        select(ConsultQueue)
        .where(ConsultQueue.org_id == principal.org_id, ConsultQueue.is_active.is_(True))
        .order_by(ConsultQueue.name)
    )
    return list(rows.scalars())


async def add_queue_member(
    session: AsyncSession, principal: Principal, *, queue_id: int, user_id: int
) -> None:
    access.reach_for(principal, Resource.CONSULT_QUEUE, Action.UPDATE)
    queue = await _queue(session, principal, queue_id)
    user = await session.get(User, user_id)
    if user is None or user.org_id != principal.org_id or not user_is_clinician(user):
        raise ValidationFailed(
            "Only clinicians of this organization answer e-consults.",
            errors=[FieldError("user_id", "a clinician of this organization")],
        )
    if not await _is_member(session, queue.id, user_id):
        session.add(ConsultQueueMember(org_id=principal.org_id, queue_id=queue.id, user_id=user_id))
        await session.flush()
        await access.record_access(
            session,
            principal,
            resource=Resource.CONSULT_QUEUE,
            action=Action.UPDATE,
            patient_id=None,
            resource_id=queue.id,
            detail={"added_user_id": user_id},
        )


def user_is_clinician(user: User) -> bool:
    from telecare.identity.models import Role

    return Role(user.role).is_clinician


async def _is_member(session: AsyncSession, queue_id: int, user_id: int) -> bool:
    row = await session.execute(
        select(ConsultQueueMember.id).where(
            ConsultQueueMember.queue_id == queue_id, ConsultQueueMember.user_id == user_id
        )
    )
    return row.first() is not None


async def my_queue_ids(session: AsyncSession, principal: Principal) -> list[int]:
    rows = await session.execute(
        select(ConsultQueueMember.queue_id).where(
            ConsultQueueMember.user_id == principal.user_id, ConsultQueueMember.org_id == principal.org_id
        )
    )
    return list(rows.scalars())


# ---- requesting ------------------------------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode() + b"\x00")
    return h.hexdigest()


async def request_consult(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    queue_id: int,
    question: str,
    summary: str,
    urgency: Urgency,
    verbal_consent: bool,
    consent_note: str = "",
    uploads: list[messaging.Upload] | None = None,
    idempotency_key: str | None = None,
) -> tuple[Consult, bool]:
    """A clinician who cares for the patient asks a specialty. The patient's verbal consent must be
    recorded (docs/econsult.md#consent). Returns (consult, created): a retry with the same Idempotency-Key
    returns the first request."""
    uploads = uploads or []
    if idempotency_key:
        existing = (
            await session.execute(
                select(Consult).where(
                    Consult.requester_user_id == principal.user_id, Consult.idempotency_key == idempotency_key
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            await access.open_patient(
                session,
                principal,
                existing.patient_id,
                resource=Resource.ECONSULT,
                action=Action.CREATE,
                resource_id=existing.id,
            )
            return existing, False
    await access.open_patient(
        session, principal, patient_id, resource=Resource.ECONSULT, action=Action.CREATE
    )
    queue = await _queue(session, principal, queue_id)
    errors = []
    if not question.strip():
        errors.append(FieldError("question", "write the focused question for the specialist"))
    if len(question) > MAX_TEXT or len(summary) > MAX_TEXT:
        errors.append(
            FieldError("question" if len(question) > MAX_TEXT else "summary", f"<= {MAX_TEXT} characters")
        )
    if not summary.strip():
        errors.append(FieldError("summary", "summarise the history and results the specialist needs"))
    if not verbal_consent:
        errors.append(FieldError("verbal_consent", "record the patient's verbal consent to the e-consult"))
    if len(uploads) > MAX_ATTACHMENTS:
        errors.append(FieldError("files", f"at most {MAX_ATTACHMENTS}"))
    if errors:
        raise ValidationFailed("The e-consult request is not complete.", errors=errors)
    now = utc_now()
    calendar = await messaging.org_calendar(session, principal.org_id)
    consult = Consult(
        org_id=principal.org_id,
        patient_id=patient_id,
        queue_id=queue.id,
        requester_user_id=principal.user_id,
        question=question.strip(),
        summary=summary.strip(),
        urgency=urgency,
        consent_at=now,
        consent_note=consent_note.strip()[:500],
        requested_at=now,
        due_at=rules.due_by(now, urgency is Urgency.URGENT, calendar, queue.routine_business_days),
        idempotency_key=idempotency_key or None,
    )
    try:
        async with session.begin_nested():
            session.add(consult)
            await session.flush()
    except IntegrityError:
        return await request_consult(
            session,
            principal,
            patient_id=patient_id,
            queue_id=queue_id,
            question=question,
            summary=summary,
            urgency=urgency,
            verbal_consent=verbal_consent,
            idempotency_key=idempotency_key,
        )
    for n, upload in enumerate(uploads):
        row = await files.store_upload(
            session,
            principal,
            patient_id=patient_id,
            data=upload.data,
            declared_name=upload.filename,
            field=f"files[{n}]",
            owner_kind="econsult",
            owner_id=consult.id,
        )
        session.add(ConsultAttachment(org_id=consult.org_id, consult_id=consult.id, file_id=row.id))
    await session.flush()
    await _audit(session, principal, consult, Action.CREATE, {"queue_id": queue.id, "urgency": str(urgency)})
    _publish(session, consult, "requested")
    return consult, True


async def _audit(
    session: AsyncSession, principal: Principal, consult: Consult, action: Action, detail: dict[str, Any]
) -> None:
    await access.record_access(
        session,
        principal,
        resource=Resource.ECONSULT,
        action=action,
        patient_id=consult.patient_id,
        resource_id=consult.id,
        detail=detail,
    )


def _publish(session: AsyncSession, consult: Consult, change: str) -> None:
    as_uow(session).publish(
        TOPIC,
        {
            "consult_id": consult.id,
            "queue_id": consult.queue_id,
            "patient_id": consult.patient_id,
            "change": change,
        },
    )


async def _consult(session: AsyncSession, principal: Principal, consult_id: int, action: Action) -> Consult:
    return await access.open_patient_record(
        session,
        principal,
        Consult,
        consult_id,
        resource=Resource.ECONSULT,
        action=action,
        not_found=ConsultNotFound,
    )


async def _require_specialist(session: AsyncSession, principal: Principal, consult: Consult) -> None:
    if not await _is_member(session, consult.queue_id, principal.user_id):
        raise NotInQueue()


def _require_requester(principal: Principal, consult: Consult) -> None:
    if consult.requester_user_id != principal.user_id:
        raise NotTheRequester()


def _require_status(consult: Consult, *allowed: ConsultStatus) -> None:
    if consult.status not in allowed:
        raise ConsultStateConflict(f"The e-consult is {consult.status}.")


# ---- working the queue -----------------------------------------------------------------------------------


@dataclass
class ConsultRow:
    id: int
    patient_id: int
    patient_name: str
    queue_id: int
    queue_name: str
    question: str
    urgency: str
    status: str
    requester_user_id: int
    requester_name: str
    specialist_user_id: int | None
    requested_at: datetime
    due_at: datetime
    answered_at: datetime | None
    overdue: bool
    turnaround_hours: float | None

    def as_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


async def list_consults(
    session: AsyncSession,
    principal: Principal,
    *,
    view: str = "queue",
    patient_id: int | None = None,
    include_closed: bool = False,
) -> list[ConsultRow]:
    """`queue`: open consults in the caller's specialty queues; `mine`: the consults the caller requested;
    with `patient_id`: that patient's consults (the chart). Audited per patient returned."""
    if view not in ("queue", "mine"):
        raise ValidationFailed("Unknown view.", errors=[FieldError("view", "queue or mine")])
    scope = access.patient_scope(principal, Resource.ECONSULT, Action.SEARCH)
    stmt = select(Consult).where(
        Consult.org_id == principal.org_id, Consult.patient_id.in_(scope.scalar_subquery())
    )
    if patient_id is not None:
        stmt = stmt.where(Consult.patient_id == patient_id)
    elif view == "queue":
        stmt = stmt.where(Consult.queue_id.in_(await my_queue_ids(session, principal) or [-1]))
    else:
        stmt = stmt.where(Consult.requester_user_id == principal.user_id)
    if not include_closed and patient_id is None:
        stmt = stmt.where(Consult.status.in_(OPEN if view == "queue" else (*OPEN, ConsultStatus.COMPLETED)))
    order = (
        [(Consult.urgency == Urgency.URGENT).desc(), Consult.due_at]
        if view == "queue"
        else [Consult.id.desc()]
    )
    consults = list((await session.execute(stmt.order_by(*order).limit(500))).scalars())
    queues = {q.id: q.name for q in await list_queues(session, principal)} if consults else {}
    from telecare.messaging import repository as messaging_repo

    patients = await messaging_repo.patient_names(session, {c.patient_id for c in consults})
    people = await messaging_repo.user_names(session, {c.requester_user_id for c in consults})
    await access.record_search(
        session,
        principal,
        resource=Resource.ECONSULT,
        patient_ids=[c.patient_id for c in consults],
        query={"view": view, "patient_id": patient_id},
    )
    now = utc_now()
    return [
        ConsultRow(
            id=c.id,
            patient_id=c.patient_id,
            patient_name=patients.get(c.patient_id, ("", ""))[0],
            queue_id=c.queue_id,
            queue_name=queues.get(c.queue_id, ""),
            question=c.question,
            urgency=str(c.urgency),
            status=str(c.status),
            requester_user_id=c.requester_user_id,
            requester_name=people.get(c.requester_user_id, ""),
            specialist_user_id=c.specialist_user_id,
            requested_at=c.requested_at,
            due_at=c.due_at,
            answered_at=c.answered_at,
            overdue=c.status in OPEN and c.due_at < now,
            turnaround_hours=(
                round(rules.turnaround(c.requested_at, c.answered_at).total_seconds() / 3600, 2)
                if c.answered_at
                else None
            ),
        )
        for c in consults
    ]


async def view_consult(session: AsyncSession, principal: Principal, *, consult_id: int) -> ConsultView:
    consult = await _consult(session, principal, consult_id, Action.READ)
    queue = await _queue(session, principal, consult.queue_id)
    notes = list(
        (
            await session.execute(
                select(ConsultNote).where(ConsultNote.consult_id == consult.id).order_by(ConsultNote.id)
            )
        ).scalars()
    )
    file_ids = list(
        (
            await session.execute(
                select(ConsultAttachment.file_id).where(ConsultAttachment.consult_id == consult.id)
            )
        ).scalars()
    )
    attachments = (
        list((await session.execute(select(StoredFile).where(StoredFile.id.in_(file_ids)))).scalars())
        if file_ids
        else []
    )
    time = list(
        (
            await session.execute(
                select(ConsultTimeEntry)
                .where(ConsultTimeEntry.consult_id == consult.id)
                .order_by(ConsultTimeEntry.id)
            )
        ).scalars()
    )
    from telecare.messaging import repository as messaging_repo

    people = {consult.requester_user_id, *(n.author_user_id for n in notes), *(t.user_id for t in time)}
    people |= {u for u in (consult.specialist_user_id, consult.answered_by_user_id) if u}
    names = await messaging_repo.user_names(session, people)
    name, mrn = (await messaging_repo.patient_names(session, {consult.patient_id})).get(
        consult.patient_id, ("", "")
    )
    return ConsultView(
        consult,
        queue,
        notes,
        attachments,
        names,
        name,
        mrn,
        consult.requester_user_id == principal.user_id,
        await _is_member(session, consult.queue_id, principal.user_id),
        time,
    )


async def accept_consult(session: AsyncSession, principal: Principal, *, consult_id: int) -> Consult:
    consult = await _consult(session, principal, consult_id, Action.UPDATE)
    await _require_specialist(session, principal, consult)
    _require_status(consult, ConsultStatus.REQUESTED)
    consult.status, consult.accepted_at, consult.specialist_user_id = (
        ConsultStatus.IN_PROGRESS,
        utc_now(),
        principal.user_id,
    )
    await session.flush()
    await _audit(session, principal, consult, Action.UPDATE, {"status": "in-progress"})
    _publish(session, consult, "accepted")
    return consult


async def add_note(session: AsyncSession, principal: Principal, *, consult_id: int, body: str) -> ConsultNote:
    """The conversation stays on the consult: a specialist's question puts it on hold for the requester; the
    requester's answer puts it back with the specialist."""
    consult = await _consult(session, principal, consult_id, Action.UPDATE)
    text = body.strip()
    if not text or len(text) > MAX_TEXT:
        raise ValidationFailed("Write the note.", errors=[FieldError("body", f"1 to {MAX_TEXT} characters")])
    _require_status(consult, *OPEN)
    specialist = await _is_member(session, consult.queue_id, principal.user_id)
    if not specialist:
        _require_requester(principal, consult)
    note = ConsultNote(
        org_id=consult.org_id,
        consult_id=consult.id,
        author_user_id=principal.user_id,
        from_specialist=specialist,
        body=text,
    )
    session.add(note)
    if specialist:
        if consult.status == ConsultStatus.REQUESTED:
            consult.accepted_at, consult.specialist_user_id = utc_now(), principal.user_id
        consult.status = ConsultStatus.ON_HOLD
    elif consult.status == ConsultStatus.ON_HOLD:
        consult.status = ConsultStatus.IN_PROGRESS
    await session.flush()
    await _audit(
        session, principal, consult, Action.UPDATE, {"note_id": note.id, "status": str(consult.status)}
    )
    if specialist:
        await _notify(
            session, consult, consult.requester_user_id, "A specialist asked a question about your e-consult"
        )
    _publish(session, consult, "note")
    return note


async def answer_consult(
    session: AsyncSession,
    principal: Principal,
    *,
    consult_id: int,
    outcome: ConsultOutcome,
    assessment: str,
    recommendations: str,
    verbal_discussion: bool = False,
) -> Consult:
    """The specialist's written answer: assessment and recommendations, or a recommendation for a visit. It
    returns to the requester's list (and notification) and to the patient's chart."""
    consult = await _consult(session, principal, consult_id, Action.UPDATE)
    await _require_specialist(session, principal, consult)
    _require_status(consult, *OPEN)
    errors = []
    if not assessment.strip():
        errors.append(FieldError("assessment", "required"))
    if not recommendations.strip():
        errors.append(FieldError("recommendations", "required"))
    if errors:
        raise ValidationFailed("The answer is not complete.", errors=errors)
    now = utc_now()
    consult.status = ConsultStatus.COMPLETED
    consult.answered_at, consult.answered_by_user_id = now, principal.user_id
    consult.specialist_user_id = consult.specialist_user_id or principal.user_id
    consult.accepted_at = consult.accepted_at or now
    consult.outcome, consult.assessment, consult.recommendations = (
        outcome,
        assessment.strip(),
        recommendations.strip(),
    )
    consult.verbal_discussion = verbal_discussion
    await session.flush()
    await _audit(session, principal, consult, Action.UPDATE, {"status": "completed", "outcome": str(outcome)})
    await _notify(session, consult, consult.requester_user_id, "Your e-consult has been answered")
    _publish(session, consult, "answered")
    return consult


async def close_consult(
    session: AsyncSession, principal: Principal, *, consult_id: int, reason: str, decline: bool
) -> Consult:
    """The specialty declines (`decline`) or the requester withdraws an open consult, with a reason."""
    consult = await _consult(session, principal, consult_id, Action.UPDATE)
    if decline:
        await _require_specialist(session, principal, consult)
    else:
        _require_requester(principal, consult)
    _require_status(consult, *OPEN)
    if not reason.strip():
        raise ValidationFailed("Give a reason.", errors=[FieldError("reason", "required")])
    consult.status = ConsultStatus.REJECTED if decline else ConsultStatus.CANCELLED
    consult.closed_reason = reason.strip()[:500]
    await session.flush()
    await _audit(session, principal, consult, Action.UPDATE, {"status": str(consult.status)})
    if decline:
        await _notify(session, consult, consult.requester_user_id, "Your e-consult was declined")
    _publish(session, consult, str(consult.status))
    return consult


async def _notify(session: AsyncSession, consult: Consult, user_id: int, subject: str) -> None:
    """In-app and email; the email names no patient and quotes nothing (docs/econsult.md#workflow)."""
    user = await session.get(User, user_id)
    await notifications.notify(
        session,
        org_id=consult.org_id,
        kind="econsult",
        subject=subject,
        body="Sign in to Telecare to read it.",
        recipient_user_id=user_id,
        recipient_email=user.email if user is not None else None,
        link=f"/econsults/{consult.id}",
    )


async def log_time(
    session: AsyncSession, principal: Principal, *, consult_id: int, minutes: int, verbal: bool, activity: str
) -> ConsultTimeEntry:
    """Minutes on the consult: the requester's (preparing the request, the discussion) or a specialist's
    (review, discussion, report). Time counts for the codes up to the answer (docs/econsult.md)."""
    consult = await _consult(session, principal, consult_id, Action.UPDATE)
    specialist = await _is_member(session, consult.queue_id, principal.user_id) and (
        consult.requester_user_id != principal.user_id
    )
    if not specialist:
        _require_requester(principal, consult)
    if not 1 <= minutes <= 240:
        raise ValidationFailed("Minutes out of range.", errors=[FieldError("minutes", "1 to 240")])
    credentials = await session.scalar(
        select(Practitioner.credentials).where(Practitioner.user_id == principal.user_id)
    )
    entry = ConsultTimeEntry(
        org_id=consult.org_id,
        consult_id=consult.id,
        user_id=principal.user_id,
        side=str(rules.Side.CONSULTANT if specialist else rules.Side.REQUESTER),
        billing_class=str(messaging_rules.billing_class_for(principal.role, credentials or "")),
        minutes=minutes,
        verbal=verbal,
        activity=(activity.strip() or "review")[:200],
        performed_at=utc_now(),
    )
    session.add(entry)
    await session.flush()
    await _audit(session, principal, consult, Action.UPDATE, {"minutes": minutes, "side": entry.side})
    return entry


async def proposed_codes(
    session: AsyncSession, principal: Principal, *, consult_id: int
) -> rules.EconsultProposal:
    """The interprofessional consult codes the record supports, for both sides, with their facts."""
    if access_rules.is_patient(principal):
        raise Forbidden("Billing proposals are for clinicians.")
    consult = await _consult(session, principal, consult_id, Action.READ)
    entries = (
        await session.execute(select(ConsultTimeEntry).where(ConsultTimeEntry.consult_id == consult.id))
    ).scalars()
    specialist_prac = None
    if consult.answered_by_user_id is not None:
        specialist_prac = await session.scalar(
            select(Practitioner.id).where(Practitioner.user_id == consult.answered_by_user_id)
        )
    seen_before: list[datetime] = []
    seen_after: list[datetime] = []
    if specialist_prac is not None:
        visits = await scheduling.completed_visit_times(
            session,
            patient_id=consult.patient_id,
            start=consult.requested_at - rules.CONSULTANT_LOOKBACK,
            end=(consult.answered_at or utc_now()) + rules.VISIT_AFTER_WINDOW,
            practitioner_id=specialist_prac,
        )
        seen_before = [v for v in visits if v < consult.requested_at]
        seen_after = [v for v in visits if consult.answered_at is not None and v >= consult.answered_at]
    prior = (
        await session.execute(
            select(
                Consult.answered_at,
                Consult.requested_at,
                Consult.answered_by_user_id,
                Consult.requester_user_id,
            ).where(
                Consult.patient_id == consult.patient_id,
                Consult.id != consult.id,
                Consult.status == ConsultStatus.COMPLETED,
                Consult.answered_at < (consult.answered_at or utc_now()),
            )
        )
    ).all()
    facts = rules.ConsultFacts(
        requested_at=consult.requested_at,
        answered_at=consult.answered_at,
        verbal_discussion=consult.verbal_discussion,
        written_report=consult.answered_at is not None,
        consent_recorded_at=consult.consent_at,
        entries=tuple(
            rules.ConsultTime(
                at=e.performed_at,
                minutes=e.minutes,
                side=rules.Side(e.side),
                billing_class=messaging_rules.BillingClass(e.billing_class),
                verbal=e.verbal,
            )
            for e in entries
        ),
        consultant_saw_patient_at=tuple(seen_before),
        visits_after_answer_with_consultant=tuple(seen_after),
        prior_consultant_codes_at=tuple(
            a for a, _, by, _ in prior if a is not None and by == consult.answered_by_user_id
        ),
        # The requester's date of service is the request (docs/econsult.md#frequency).
        prior_requester_codes_at=tuple(r for _, r, _, req in prior if req == consult.requester_user_id),
        now=utc_now(),
    )
    return rules.propose_econsult_codes(facts)


async def export_econsults(session: AsyncSession, principal: Principal, patient_id: int) -> dict[str, Any]:
    """The patient's e-consults for the compartment export (identity.service.export_patient audits it)."""
    consults = (
        await session.execute(select(Consult).where(Consult.patient_id == patient_id).order_by(Consult.id))
    ).scalars()
    return {
        "econsults": [
            {
                "id": c.id,
                "question": c.question,
                "status": str(c.status),
                "requested_at": c.requested_at.isoformat(),
                "answered_at": c.answered_at.isoformat() if c.answered_at else None,
                "outcome": str(c.outcome) if c.outcome else None,
                "assessment": c.assessment,
                "recommendations": c.recommendations,
            }
            for c in consults
        ]
    }


async def turnaround_summary(
    session: AsyncSession, principal: Principal, *, since: datetime
) -> dict[str, Any]:
    """Median and 90th-percentile hours from request to answer per queue since `since` (counts only)."""
    access.reach_for(principal, Resource.AGGREGATE, Action.READ)
    rows = (
        await session.execute(
            select(Consult.queue_id, Consult.requested_at, Consult.answered_at).where(
                Consult.org_id == principal.org_id,
                Consult.answered_at.is_not(None),
                Consult.requested_at >= since,
            )
        )
    ).all()
    by_queue: dict[int, list[float]] = {}
    for queue_id, requested, answered in rows:
        if answered is None:
            continue
        by_queue.setdefault(int(queue_id), []).append((answered - requested).total_seconds() / 3600)
    open_count = await session.scalar(
        select(func.count(Consult.id)).where(Consult.org_id == principal.org_id, Consult.status.in_(OPEN))
    )
    out = {}
    for queue_id, hours in by_queue.items():
        hours.sort()
        out[queue_id] = {
            "answered": len(hours),
            "median_hours": round(hours[len(hours) // 2], 2),
            "p90_hours": round(hours[min(len(hours) - 1, int(len(hours) * 0.9))], 2),
        }
    return {"queues": out, "open": int(open_count or 0), "since": since.isoformat()}
