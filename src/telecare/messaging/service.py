"""Secure messaging actions: a patient and a team inbox exchange messages in threads (docs/messaging.md).

Every action is `(session, principal, *, ...)`: it authorises through the access policy (`open_patient` on
the thread's patient, which audits), writes, and publishes `messaging.thread` after commit so that open
inboxes update live. Staff act on a thread as members of its inbox; clinicians outside the inbox read it
only through another care relationship (the chart) and cannot reply, assign or close."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.errors import AppError, Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.files import service as files
from telecare.files.models import StoredFile
from telecare.identity.models import Organization, Patient, Practitioner, Role, User
from telecare.messaging import repository as repo
from telecare.messaging import rules
from telecare.messaging.models import (
    Holiday,
    Inbox,
    InboxKind,
    InboxMember,
    Message,
    MessageAttachment,
    Priority,
    Thread,
    ThreadStatus,
    ThreadTime,
)
from telecare.notifications import service as notifications
from telecare.scheduling import service as scheduling

MAX_ATTACHMENTS = 5  # per message (docs/messaging.md#attachments)
MAX_BODY = 10_000
MAX_SUBJECT = 200
MAX_MINUTES_PER_ENTRY = 240
TOPIC = "messaging.thread"
# Established patient: a completed visit in this organization within three years (the rule the visits
# domain applies, docs/billing-visits.md); services outside Telecare are not seen.
ESTABLISHED_LOOKBACK = timedelta(days=3 * 365)


class InboxNotFound(NotFound):
    code = "inbox_not_found"
    title = "Inbox not found"


class ThreadNotFound(NotFound):
    """The thread does not exist or is outside the caller's reach (no existence oracle)."""

    code = "thread_not_found"
    title = "Conversation not found"


class NotInInbox(Forbidden):
    """Staff act on a thread as members of its inbox."""

    code = "not_an_inbox_member"
    title = "Not a member of this inbox"


class ThreadClosed(Conflict):
    code = "thread_closed"
    title = "This conversation is closed"


class InboxClosedToPatients(Forbidden):
    code = "inbox_not_open_to_patients"
    title = "This team does not take messages from patients"


class IdempotencyKeyReused(AppError):
    """The Idempotency-Key was already used for a different request."""

    status_code = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key already used for another message"


@dataclass
class Upload:
    """One attached file as received: its bytes and the name the sender gave it (display only)."""

    data: bytes
    filename: str | None


@dataclass
class SendResult:
    thread: Thread
    message: Message
    created: bool  # False when an Idempotency-Key replay returned the first send
    attachments: list[StoredFile] = field(default_factory=list)
    emergency: rules.EmergencyMatch | None = None


@dataclass
class ThreadView:
    thread: Thread
    inbox: Inbox
    messages: list[Message]
    attachments: dict[int, list[StoredFile]]
    names: dict[int, str]
    patient_name: str
    mrn: str
    can_act: bool  # staff: a member of the inbox (reply, assign, close)
    members: list[tuple[int, str, str]] = field(default_factory=list)


# ---- inboxes ---------------------------------------------------------------------------------------------


async def create_inbox(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    kind: InboxKind,
    slug: str,
    response_business_days: int = 2,
    patients_may_write: bool = True,
    org_id: int | None = None,
) -> Inbox:
    access.reach_for(principal, Resource.INBOX, Action.CREATE)
    errors = []
    if org_id is not None and org_id != principal.org_id:
        errors.append(FieldError("org_id", "inboxes are created in your own organization"))
    if not name.strip():
        errors.append(FieldError("name", "required"))
    if not slug or not slug.replace("-", "").isalnum() or slug.lower() != slug:
        errors.append(FieldError("slug", "lower-case letters, digits and hyphens"))
    if not 0 <= response_business_days <= 10:
        errors.append(FieldError("response_business_days", "between 0 and 10"))
    if errors:
        raise ValidationFailed("The inbox is not valid.", errors=errors)
    inbox = Inbox(
        org_id=principal.org_id,
        name=name.strip(),
        kind=kind,
        slug=slug,
        response_business_days=response_business_days,
        patients_may_write=patients_may_write,
    )
    try:
        async with session.begin_nested():
            session.add(inbox)
            await session.flush()
    except IntegrityError:
        raise ValidationFailed(
            "An inbox with this slug exists.", errors=[FieldError("slug", "already used")]
        ) from None
    await _audit_inbox(session, principal, inbox.id, Action.CREATE)
    return inbox


async def _inbox(session: AsyncSession, principal: Principal, inbox_id: int) -> Inbox:
    inbox = await session.get(Inbox, inbox_id)
    if inbox is None or inbox.org_id != principal.org_id:
        raise InboxNotFound()
    return inbox


async def add_member(session: AsyncSession, principal: Principal, *, inbox_id: int, user_id: int) -> None:
    access.reach_for(principal, Resource.INBOX, Action.UPDATE)
    inbox = await _inbox(session, principal, inbox_id)
    user = await session.get(User, user_id)
    if user is None or user.org_id != principal.org_id or not Role(user.role).is_clinician:
        raise ValidationFailed(
            "Only clinicians of this organization can join an inbox.",
            errors=[FieldError("user_id", "a clinician of this organization")],
        )
    if not await repo.is_member(session, inbox.id, user_id):
        session.add(InboxMember(org_id=principal.org_id, inbox_id=inbox.id, user_id=user_id))
        await session.flush()
        await _audit_inbox(session, principal, inbox.id, Action.UPDATE, {"added_user_id": user_id})


async def remove_member(session: AsyncSession, principal: Principal, *, inbox_id: int, user_id: int) -> None:
    access.reach_for(principal, Resource.INBOX, Action.UPDATE)
    inbox = await _inbox(session, principal, inbox_id)
    member = (
        await session.execute(
            select(InboxMember).where(InboxMember.inbox_id == inbox.id, InboxMember.user_id == user_id)
        )
    ).scalar_one_or_none()
    if member is not None:
        await session.delete(member)
        await _audit_inbox(session, principal, inbox.id, Action.UPDATE, {"removed_user_id": user_id})
        # The inbox was a care relationship: open sockets of the removed member re-check at once.
        from telecare.auth import sessions

        sessions.publish_revoked(session, user_id=user_id)


async def get_inbox(session: AsyncSession, principal: Principal, *, inbox_id: int) -> Inbox:
    access.reach_for(principal, Resource.INBOX, Action.READ)
    return await _inbox(session, principal, inbox_id)


async def _audit_inbox(
    session: AsyncSession,
    principal: Principal,
    inbox_id: int,
    action: Action,
    detail: dict[str, Any] | None = None,
) -> None:
    await access.record_access(
        session,
        principal,
        resource=Resource.INBOX,
        action=action,
        patient_id=None,
        resource_id=inbox_id,
        detail=detail,
    )


async def list_inboxes(session: AsyncSession, principal: Principal) -> list[Inbox]:
    access.reach_for(principal, Resource.INBOX, Action.SEARCH)
    found = await repo.inboxes(session, principal.org_id)
    if access_rules.is_patient(principal):
        found = [i for i in found if i.patients_may_write]
    return found


# ---- calendar --------------------------------------------------------------------------------------------


async def org_calendar(session: AsyncSession, org_id: int) -> rules.OrgCalendar:
    org = await session.get(Organization, org_id)
    days = (await session.execute(select(Holiday.day).where(Holiday.org_id == org_id))).scalars()
    return rules.OrgCalendar(timezone=org.timezone if org is not None else "UTC", holidays=frozenset(days))


async def add_holiday(session: AsyncSession, principal: Principal, *, day: Any, name: str) -> Holiday:
    access.reach_for(principal, Resource.INBOX, Action.UPDATE)
    holiday = Holiday(org_id=principal.org_id, day=day, name=name.strip() or "Holiday")
    try:
        async with session.begin_nested():
            session.add(holiday)
            await session.flush()
    except IntegrityError:
        raise ValidationFailed(
            "That day is already a holiday.", errors=[FieldError("day", "exists")]
        ) from None
    await access.record_access(
        session,
        principal,
        resource=Resource.INBOX,
        action=Action.UPDATE,
        patient_id=None,
        detail={"holiday": str(day)},
    )
    return holiday


# ---- sending ---------------------------------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _upload_digest(uploads: list[Upload]) -> str:
    return _digest(*(hashlib.sha256(u.data).hexdigest() for u in uploads))


def _check_text(body: str, *, subject: str | None = None) -> str:
    errors = []
    text = body.strip()
    if not text:
        errors.append(FieldError("body", "write a message"))
    elif len(text) > MAX_BODY:
        errors.append(FieldError("body", f"at most {MAX_BODY} characters"))
    if subject is not None and not subject.strip():
        errors.append(FieldError("subject", "required"))
    elif subject is not None and len(subject.strip()) > MAX_SUBJECT:
        errors.append(FieldError("subject", f"at most {MAX_SUBJECT} characters"))
    if errors:
        raise ValidationFailed("The message is not valid.", errors=errors)
    return text


def _check_uploads(uploads: list[Upload]) -> None:
    if len(uploads) > MAX_ATTACHMENTS:
        raise ValidationFailed(
            f"At most {MAX_ATTACHMENTS} attachments per message.",
            errors=[FieldError("files", f"at most {MAX_ATTACHMENTS}")],
        )


async def _replay(
    session: AsyncSession, principal: Principal, key: str | None, digest: str
) -> SendResult | None:
    """A retried send (same Idempotency-Key, same request) returns what the first one created."""
    if not key:
        return None
    if len(key) > 200:
        raise ValidationFailed(
            "Idempotency-Key is too long.", errors=[FieldError("Idempotency-Key", "<= 200")]
        )
    first = await repo.message_by_key(session, principal.user_id, key)
    if first is None:
        return None
    if first.request_digest != digest:
        raise IdempotencyKeyReused()
    thread = await session.get(Thread, first.thread_id)
    assert thread is not None
    await access.open_patient(
        session,
        principal,
        thread.patient_id,
        resource=Resource.COMMUNICATION,
        action=Action.CREATE,
        resource_id=first.id,
    )
    ids = (await repo.attachments_of(session, [first.id])).get(first.id, [])
    stored = [f for f in [await session.get(StoredFile, i) for i in ids] if f is not None]
    return SendResult(thread, first, False, stored)


async def start_thread(
    session: AsyncSession,
    principal: Principal,
    *,
    inbox_id: int,
    subject: str,
    body: str,
    patient_id: int | None = None,
    uploads: list[Upload] | None = None,
    idempotency_key: str | None = None,
) -> SendResult:
    """A patient writes to a team; or a member of the team writes to a patient."""
    uploads = uploads or []
    is_patient = access_rules.is_patient(principal)
    # A patient writes about themselves; naming another patient is refused by the policy (404), not ignored.
    pid = patient_id if patient_id is not None else principal.patient_id if is_patient else None
    if pid is None:
        raise ValidationFailed("Choose the patient.", errors=[FieldError("patient_id", "required")])
    text = _check_text(body, subject=subject)
    _check_uploads(uploads)
    digest = _digest("start", inbox_id, pid, subject.strip(), text, _upload_digest(uploads))
    replay = await _replay(session, principal, idempotency_key, digest)
    if replay is not None:
        return replay
    await access.open_patient(session, principal, pid, resource=Resource.COMMUNICATION, action=Action.CREATE)
    inbox = await _inbox(session, principal, inbox_id)
    if not inbox.is_active:
        raise InboxNotFound()
    if is_patient and not inbox.patients_may_write:
        raise InboxClosedToPatients()
    if not is_patient and not await repo.is_member(session, inbox.id, principal.user_id):
        raise NotInInbox()
    now = utc_now()
    thread = Thread(
        org_id=principal.org_id,
        patient_id=pid,
        inbox_id=inbox.id,
        subject=subject.strip(),
        patient_initiated=is_patient,
        started_by_user_id=principal.user_id,
        created_at=now,
        last_message_at=now,
    )
    session.add(thread)
    await session.flush()
    return await _add_message(session, principal, thread, inbox, text, uploads, idempotency_key, digest)


async def reply(
    session: AsyncSession,
    principal: Principal,
    *,
    thread_id: int,
    body: str,
    uploads: list[Upload] | None = None,
    idempotency_key: str | None = None,
    minutes: int | None = None,
) -> SendResult:
    """Add a message to a thread. A staff reply reopens a closed thread; a patient starts a new one."""
    uploads = uploads or []
    text = _check_text(body)
    _check_uploads(uploads)
    digest = _digest("reply", thread_id, text, _upload_digest(uploads), minutes)
    replay = await _replay(session, principal, idempotency_key, digest)
    if replay is not None:
        return replay
    thread = await _thread(session, principal, thread_id, Action.CREATE)
    inbox = await _inbox(session, principal, thread.inbox_id)
    if access_rules.is_patient(principal):
        if thread.status == ThreadStatus.CLOSED:
            raise ThreadClosed("This conversation is closed. Start a new message to the team.")
    else:
        await _require_member(session, principal, thread)
        if thread.status == ThreadStatus.CLOSED:
            thread.status, thread.closed_at, thread.closed_by_user_id = ThreadStatus.OPEN, None, None
    result = await _add_message(session, principal, thread, inbox, text, uploads, idempotency_key, digest)
    if minutes:
        await log_time(session, principal, thread_id=thread.id, minutes=minutes, activity="reply")
    return result


async def _add_message(
    session: AsyncSession,
    principal: Principal,
    thread: Thread,
    inbox: Inbox,
    text: str,
    uploads: list[Upload],
    key: str | None,
    digest: str,
) -> SendResult:
    now = utc_now()
    from_patient = access_rules.is_patient(principal)
    match = rules.find_emergency_terms(text) if from_patient else None
    message = Message(
        org_id=thread.org_id,
        thread_id=thread.id,
        patient_id=thread.patient_id,
        sender_user_id=principal.user_id,
        from_patient=from_patient,
        body=text,
        emergency_terms=list(match.terms) if match else [],
        idempotency_key=key or None,
        request_digest=digest if key else None,
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(message)
            await session.flush()
    except IntegrityError:
        # The same key raced in from a concurrent retry: answer with the one that won.
        replay = await _replay(session, principal, key, digest)
        if replay is None:
            raise
        return replay
    stored: list[StoredFile] = []
    for position, upload in enumerate(uploads):
        row = await files.store_upload(
            session,
            principal,
            patient_id=thread.patient_id,
            data=upload.data,
            declared_name=upload.filename,
            field=f"files[{position}]",
            owner_kind="message",
            owner_id=message.id,
        )
        session.add(
            MessageAttachment(org_id=thread.org_id, message_id=message.id, file_id=row.id, position=position)
        )
        stored.append(row)
    thread.last_message_at = now
    if from_patient:
        if match is not None:
            thread.priority = Priority.URGENT
        if thread.awaiting_since is None:
            calendar = await org_calendar(session, thread.org_id)
            thread.awaiting_since = now
            thread.due_at = rules.due_at(calendar, now, inbox.response_business_days)
    else:
        thread.awaiting_since, thread.due_at = None, None
        if thread.first_response_at is None:
            thread.first_response_at = now
        # Replying means the staff member has read what the patient wrote.
        await session.execute(
            update(Message)
            .where(Message.thread_id == thread.id, Message.from_patient.is_(True), Message.read_at.is_(None))
            .values(read_at=now, read_by_user_id=principal.user_id)
        )
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.COMMUNICATION,
        action=Action.CREATE,
        patient_id=thread.patient_id,
        resource_id=message.id,
        detail={"thread_id": thread.id, "attachments": len(stored), "urgent": match is not None},
    )
    await _notify(session, thread, inbox, from_patient=from_patient)
    _publish(session, thread, "message", message_id=message.id, urgent=match is not None)
    return SendResult(thread, message, True, stored, match)


async def _notify(session: AsyncSession, thread: Thread, inbox: Inbox, *, from_patient: bool) -> None:
    """Email says only that a message is waiting, with a link: never its content or the subject
    (docs/messaging.md#notifications)."""
    if from_patient:
        return  # the team sees it arrive in its inbox, live
    patient = await session.get(Patient, thread.patient_id)
    if patient is None or patient.user_id is None:
        return
    user = await session.get(User, patient.user_id)
    email = (user.email if user is not None else None) or patient.email
    await notifications.notify(
        session,
        org_id=thread.org_id,
        kind="message_waiting",
        subject="You have a new secure message",
        body=(
            "Your care team has sent you a secure message. Sign in to the patient portal to read it.\n"
            "Do not reply to this email."
        ),
        recipient_user_id=patient.user_id,
        recipient_email=email,
        link=f"/messages/{thread.id}",
    )


def _publish(session: AsyncSession, thread: Thread, change: str, **extra: Any) -> None:
    as_uow(session).publish(
        TOPIC,
        {
            "thread_id": thread.id,
            "inbox_id": thread.inbox_id,
            "patient_id": thread.patient_id,
            "change": change,
            **extra,
        },
    )


# ---- reading ---------------------------------------------------------------------------------------------


async def _thread(session: AsyncSession, principal: Principal, thread_id: int, action: Action) -> Thread:
    """The thread, if the caller may act on its patient's communications (access.open_patient_record)."""
    return await access.open_patient_record(
        session,
        principal,
        Thread,
        thread_id,
        resource=Resource.COMMUNICATION,
        action=action,
        not_found=ThreadNotFound,
    )


async def _audit_thread(
    session: AsyncSession, principal: Principal, thread: Thread, detail: dict[str, Any]
) -> None:
    """An update of the thread (assignment, move, close, logged time), audited on its patient."""
    await access.record_access(
        session,
        principal,
        resource=Resource.COMMUNICATION,
        action=Action.UPDATE,
        patient_id=thread.patient_id,
        resource_id=thread.id,
        detail=detail,
    )


async def _require_member(session: AsyncSession, principal: Principal, thread: Thread) -> None:
    if not await repo.is_member(session, thread.inbox_id, principal.user_id):
        raise NotInInbox()


async def view_thread(session: AsyncSession, principal: Principal, *, thread_id: int) -> ThreadView:
    """The thread with its messages and attachments (audited). What the caller has now seen is marked read
    once this unit of work ends, in a write of its own (a GET's unit of work is read-only)."""
    thread = await _thread(session, principal, thread_id, Action.READ)
    inbox = await _inbox(session, principal, thread.inbox_id)
    messages = await repo.thread_messages(session, thread.id)
    ids = await repo.attachments_of(session, [m.id for m in messages])
    stored: dict[int, list[StoredFile]] = {}
    for mid, file_ids in ids.items():
        rows = (await session.execute(select(StoredFile).where(StoredFile.id.in_(file_ids)))).scalars()
        by_id = {r.id: r for r in rows}
        stored[mid] = [by_id[f] for f in file_ids if f in by_id]
    people = {m.sender_user_id for m in messages} | {
        u for u in (thread.assigned_user_id, thread.closed_by_user_id) if u is not None
    }
    names = await repo.user_names(session, people)
    patient_name, mrn = (await repo.patient_names(session, {thread.patient_id})).get(
        thread.patient_id, ("", "")
    )
    is_patient = access_rules.is_patient(principal)
    can_act = not is_patient and await repo.is_member(session, thread.inbox_id, principal.user_id)
    view = ThreadView(
        thread,
        inbox,
        messages,
        stored,
        names,
        patient_name,
        mrn,
        can_act,
        await repo.members(session, inbox.id) if can_act else [],
    )
    unread = [m.id for m in messages if m.read_at is None and m.from_patient != is_patient]
    first_review = (
        thread.patient_initiated
        and thread.first_review_at is None
        and can_act
        and await _billing_class(session, principal) is not rules.BillingClass.STAFF
    )
    if (unread and (is_patient or can_act)) or first_review:
        up_to = max(m.id for m in messages)

        async def mark(s: AsyncSession) -> None:
            await mark_read(s, principal, thread_id=thread.id, up_to_message_id=up_to)

        as_uow(session).after_rollback(mark)
    return view


async def _billing_class(session: AsyncSession, principal: Principal) -> rules.BillingClass:
    """Whose time this is for online digital E/M: from the role and the practitioner's credentials."""
    if not access_rules.has_clinical_role(principal):
        return rules.BillingClass.STAFF
    credentials = await session.scalar(
        select(Practitioner.credentials).where(Practitioner.user_id == principal.user_id)
    )
    return rules.billing_class_for(principal.role, credentials or "")


async def mark_read(
    session: AsyncSession, principal: Principal, *, thread_id: int, up_to_message_id: int | None = None
) -> int:
    """Mark the other side's messages read (up to a message id, when given): read receipts and unread
    counts. For staff only members of the inbox count; a physician's or qualified professional's first
    read starts the online digital E/M window. Returns how many messages were marked."""
    thread = await _thread(session, principal, thread_id, Action.UPDATE)
    is_patient = access_rules.is_patient(principal)
    if not is_patient and not await repo.is_member(session, thread.inbox_id, principal.user_id):
        return 0
    now = utc_now()
    stmt = update(Message).where(
        Message.thread_id == thread.id,
        Message.from_patient.is_(not is_patient),
        Message.read_at.is_(None),
    )
    if up_to_message_id is not None:
        stmt = stmt.where(Message.id <= up_to_message_id)
    result = await session.execute(stmt.values(read_at=now, read_by_user_id=principal.user_id))
    marked = int(getattr(result, "rowcount", 0) or 0)
    if (
        thread.patient_initiated
        and thread.first_review_at is None
        and await _billing_class(session, principal) is not rules.BillingClass.STAFF
    ):
        thread.first_review_at, thread.first_review_user_id = now, principal.user_id
    await session.flush()
    if marked:
        _publish(session, thread, "read", by_patient=is_patient)
    return marked


@dataclass
class ThreadRow:
    id: int
    subject: str
    status: str
    priority: str
    patient_id: int
    patient_name: str
    mrn: str
    inbox_id: int
    inbox_name: str
    assigned_user_id: int | None
    assigned_name: str | None
    last_message_at: datetime
    due_at: datetime | None
    overdue: bool
    unread: int

    def as_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


FILTERS = ("all", "unassigned", "mine", "overdue", "urgent", "closed")


async def list_threads(
    session: AsyncSession,
    principal: Principal,
    *,
    filter: str = "all",
    inbox_id: int | None = None,
    patient_id: int | None = None,
    limit: int = 200,
) -> list[ThreadRow]:
    """A patient's own threads, or a staff member's inboxes (filters: unassigned, mine, overdue, urgent,
    closed; open threads otherwise), most recent first. Audited per patient returned."""
    if filter not in FILTERS:
        raise ValidationFailed(
            "Unknown filter.", errors=[FieldError("filter", f"one of {', '.join(FILTERS)}")]
        )
    is_patient = access_rules.is_patient(principal)
    stmt = repo.readable_threads(principal, Action.SEARCH)
    if patient_id is not None:
        stmt = stmt.where(Thread.patient_id == patient_id)
    if not is_patient and patient_id is None:
        mine = await repo.member_inbox_ids(session, principal)
        if inbox_id is not None:
            if inbox_id not in mine:
                raise NotInInbox()
            mine = [inbox_id]
        stmt = stmt.where(Thread.inbox_id.in_(mine or [-1]))
    elif inbox_id is not None:
        stmt = stmt.where(Thread.inbox_id == inbox_id)
    now = utc_now()
    if filter == "closed":
        stmt = stmt.where(Thread.status == ThreadStatus.CLOSED)
    elif not is_patient and patient_id is None:
        stmt = stmt.where(Thread.status == ThreadStatus.OPEN)
    if filter == "unassigned":
        stmt = stmt.where(Thread.assigned_user_id.is_(None))
    elif filter == "mine":
        stmt = stmt.where(Thread.assigned_user_id == principal.user_id)
    elif filter == "overdue":
        stmt = stmt.where(repo.overdue(now))
    elif filter == "urgent":
        stmt = stmt.where(Thread.priority == Priority.URGENT)
    unread = repo.unread_messages(from_patient=not is_patient)
    rows = (
        await session.execute(
            stmt.add_columns(func.coalesce(unread.c.unread, 0), Inbox.name)
            .outerjoin(unread, unread.c.thread_id == Thread.id)
            .join(Inbox, Inbox.id == Thread.inbox_id)
            .order_by(
                (Thread.priority == Priority.URGENT).desc(), Thread.last_message_at.desc(), Thread.id.desc()
            )
            .limit(limit)
        )
    ).all()
    threads = [(r[0], int(r[1]), str(r[2])) for r in rows]
    patients = await repo.patient_names(session, {t.patient_id for t, _, _ in threads})
    assignees = await repo.user_names(
        session, {t.assigned_user_id for t, _, _ in threads if t.assigned_user_id}
    )
    await access.record_search(
        session,
        principal,
        resource=Resource.COMMUNICATION,
        patient_ids=[t.patient_id for t, _, _ in threads],
        query={"filter": filter, "inbox_id": inbox_id, "patient_id": patient_id},
    )
    return [
        ThreadRow(
            id=t.id,
            subject=t.subject,
            status=str(t.status),
            priority=str(t.priority),
            patient_id=t.patient_id,
            patient_name=patients.get(t.patient_id, ("", ""))[0],
            mrn=patients.get(t.patient_id, ("", ""))[1],
            inbox_id=t.inbox_id,
            inbox_name=name,
            assigned_user_id=t.assigned_user_id,
            assigned_name=assignees.get(t.assigned_user_id) if t.assigned_user_id else None,
            last_message_at=t.last_message_at,
            due_at=t.due_at,
            overdue=t.status == ThreadStatus.OPEN and t.due_at is not None and t.due_at < now,
            unread=count,
        )
        for t, count, name in threads
    ]


async def thread_row(session: AsyncSession, principal: Principal, thread: Thread) -> ThreadRow:
    """One thread as a list row, for the caller's side (after an action on it; already authorised)."""
    is_patient = access_rules.is_patient(principal)
    unread = await session.scalar(
        select(func.count(Message.id)).where(
            Message.thread_id == thread.id,
            Message.from_patient.is_(not is_patient),
            Message.read_at.is_(None),
        )
    )
    inbox = await session.get(Inbox, thread.inbox_id)
    name, mrn = (await repo.patient_names(session, {thread.patient_id})).get(thread.patient_id, ("", ""))
    assignee = thread.assigned_user_id
    names = await repo.user_names(session, {assignee} if assignee else set())
    return ThreadRow(
        id=thread.id,
        subject=thread.subject,
        status=str(thread.status),
        priority=str(thread.priority),
        patient_id=thread.patient_id,
        patient_name=name,
        mrn=mrn,
        inbox_id=thread.inbox_id,
        inbox_name=inbox.name if inbox else "",
        assigned_user_id=assignee,
        assigned_name=names.get(assignee) if assignee else None,
        last_message_at=thread.last_message_at,
        due_at=thread.due_at,
        overdue=thread.status == ThreadStatus.OPEN
        and thread.due_at is not None
        and thread.due_at < utc_now(),
        unread=int(unread or 0),
    )


@dataclass
class UnreadCounts:
    total: int
    by_inbox: dict[int, int]
    overdue: int


async def unread_counts(session: AsyncSession, principal: Principal) -> UnreadCounts:
    """Unread messages for the caller's side: a patient's from the team; a staff member's from patients in
    the inboxes they belong to. Counts only (no patient data), so not audited per patient."""
    access.reach_for(principal, Resource.COMMUNICATION, Action.SEARCH)
    is_patient = access_rules.is_patient(principal)
    scope = access.patient_scope(principal, Resource.COMMUNICATION, Action.SEARCH).scalar_subquery()
    stmt = (
        select(Thread.inbox_id, func.count(Message.id))
        .join(Message, Message.thread_id == Thread.id)
        .where(
            Thread.org_id == principal.org_id,
            Thread.patient_id.in_(scope),
            Message.from_patient.is_(not is_patient),
            Message.read_at.is_(None),
        )
        .group_by(Thread.inbox_id)
    )
    overdue = 0
    if not is_patient:
        mine = await repo.member_inbox_ids(session, principal)
        stmt = stmt.where(Thread.inbox_id.in_(mine or [-1]))
        overdue = int(
            await session.scalar(
                select(func.count(Thread.id)).where(
                    Thread.inbox_id.in_(mine or [-1]), Thread.patient_id.in_(scope), repo.overdue(utc_now())
                )
            )
            or 0
        )
    by_inbox = {int(i): int(n) for i, n in (await session.execute(stmt)).all()}
    return UnreadCounts(sum(by_inbox.values()), by_inbox, overdue)


# ---- handling --------------------------------------------------------------------------------------------


async def assign_thread(
    session: AsyncSession, principal: Principal, *, thread_id: int, assignee_user_id: int | None
) -> Thread:
    thread = await _thread(session, principal, thread_id, Action.UPDATE)
    await _require_member(session, principal, thread)
    if assignee_user_id is not None and not await repo.is_member(session, thread.inbox_id, assignee_user_id):
        raise ValidationFailed(
            "Assign the conversation to a member of its inbox.",
            errors=[FieldError("assignee_user_id", "not a member of this inbox")],
        )
    thread.assigned_user_id = assignee_user_id
    await session.flush()
    await _audit_thread(session, principal, thread, {"assigned_user_id": assignee_user_id})
    _publish(session, thread, "assigned", assigned_user_id=assignee_user_id)
    return thread


async def move_thread(
    session: AsyncSession, principal: Principal, *, thread_id: int, inbox_id: int
) -> Thread:
    """Hand a conversation to another team (its response clock keeps running)."""
    thread = await _thread(session, principal, thread_id, Action.UPDATE)
    await _require_member(session, principal, thread)
    target = await _inbox(session, principal, inbox_id)
    old = thread.inbox_id
    thread.inbox_id, thread.assigned_user_id = target.id, None
    await session.flush()
    await _audit_thread(session, principal, thread, {"from_inbox": old, "to_inbox": target.id})
    _publish(session, thread, "moved", from_inbox_id=old)
    return thread


async def close_thread(session: AsyncSession, principal: Principal, *, thread_id: int) -> Thread:
    """Staff close a handled conversation; a patient may close their own."""
    thread = await _thread(session, principal, thread_id, Action.UPDATE)
    if not access_rules.is_patient(principal):
        await _require_member(session, principal, thread)
    if thread.status == ThreadStatus.CLOSED:
        return thread
    now = utc_now()
    thread.status, thread.closed_at, thread.closed_by_user_id = ThreadStatus.CLOSED, now, principal.user_id
    thread.awaiting_since, thread.due_at = None, None
    if not access_rules.is_patient(principal):
        await session.execute(
            update(Message)
            .where(Message.thread_id == thread.id, Message.from_patient.is_(True), Message.read_at.is_(None))
            .values(read_at=now, read_by_user_id=principal.user_id)
        )
    await session.flush()
    await _audit_thread(session, principal, thread, {"status": "closed"})
    _publish(session, thread, "closed")
    return thread


async def log_time(
    session: AsyncSession, principal: Principal, *, thread_id: int, minutes: int, activity: str
) -> ThreadTime:
    """A clinician's minutes on the thread (review, reply, orders): the online digital E/M total."""
    if access_rules.is_patient(principal):
        raise Forbidden("Patients do not log time.")
    thread = await _thread(session, principal, thread_id, Action.UPDATE)
    await _require_member(session, principal, thread)
    if not 1 <= minutes <= MAX_MINUTES_PER_ENTRY:
        raise ValidationFailed(
            "Minutes out of range.", errors=[FieldError("minutes", f"1 to {MAX_MINUTES_PER_ENTRY}")]
        )
    entry = ThreadTime(
        org_id=thread.org_id,
        thread_id=thread.id,
        patient_id=thread.patient_id,
        user_id=principal.user_id,
        billing_class=str(await _billing_class(session, principal)),
        minutes=minutes,
        activity=(activity.strip() or "review")[:200],
        performed_at=utc_now(),
    )
    session.add(entry)
    await session.flush()
    await _audit_thread(session, principal, thread, {"minutes": minutes})
    return entry


async def digital_em(
    session: AsyncSession, principal: Principal, *, thread_id: int
) -> rules.DigitalEmProposal:
    """The online digital E/M code the thread's logged time supports, with its facts (proposed, for the
    clinician to confirm: docs/messaging.md#online-digital-em)."""
    if access_rules.is_patient(principal):
        raise Forbidden("Billing proposals are for clinicians.")
    thread = await _thread(session, principal, thread_id, Action.READ)
    entries = await repo.time_entries(session, thread.id)
    first = thread.first_review_at
    start = first or thread.created_at
    since = start - rules.RELATED_VISIT_LOOKBACK
    visits = await scheduling.completed_visit_times(
        session,
        patient_id=thread.patient_id,
        start=thread.created_at - ESTABLISHED_LOOKBACK,
        end=start + rules.DIGITAL_EM_WINDOW,
    )
    established = any(v < thread.created_at for v in visits)
    related = tuple(v for v in visits if v >= since)
    facts = rules.DigitalVisitFacts(
        patient_initiated=thread.patient_initiated,
        established_patient=established,
        first_review_at=first,
        time_entries=tuple(
            rules.TimeEntry(
                at=e.performed_at, minutes=e.minutes, billing_class=rules.BillingClass(e.billing_class)
            )
            for e in entries
        ),
        related_em_visit_at=related,
        now=utc_now(),
        thread_closed_at=thread.closed_at,
    )
    return rules.propose_digital_em(facts)


@dataclass
class InboxFigures:
    inbox_id: int
    name: str
    response_business_days: int
    open: int
    unassigned: int
    overdue: int
    urgent: int
    oldest_due_at: datetime | None
    answered: int  # first responses in the period
    median_first_response_hours: float | None


async def response_summary(
    session: AsyncSession, principal: Principal, *, since: datetime
) -> list[InboxFigures]:
    """Per inbox, counts only (no patient, no content): open, unassigned, overdue and urgent threads, the
    oldest due date, and the median time to the team's first response for threads started since `since`.
    For coordinators and the dashboards: overdue threads surface to them as numbers, not messages."""
    access.reach_for(principal, Resource.AGGREGATE, Action.READ)
    now = utc_now()
    out = []
    for inbox in await repo.inboxes(session, principal.org_id):
        base = select(func.count(Thread.id)).where(
            Thread.inbox_id == inbox.id, Thread.status == ThreadStatus.OPEN
        )
        open_ = int(await session.scalar(base) or 0)
        unassigned = int(await session.scalar(base.where(Thread.assigned_user_id.is_(None))) or 0)
        overdue = int(await session.scalar(base.where(repo.overdue(now))) or 0)
        urgent = int(await session.scalar(base.where(Thread.priority == Priority.URGENT)) or 0)
        oldest = await session.scalar(
            select(func.min(Thread.due_at)).where(
                Thread.inbox_id == inbox.id, Thread.status == ThreadStatus.OPEN
            )
        )
        pairs = (
            await session.execute(
                select(Thread.created_at, Thread.first_response_at).where(
                    Thread.inbox_id == inbox.id,
                    Thread.patient_initiated.is_(True),
                    Thread.created_at >= since,
                    Thread.first_response_at.is_not(None),
                )
            )
        ).all()
        hours = sorted((b - a).total_seconds() / 3600 for a, b in pairs if b is not None)
        out.append(
            InboxFigures(
                inbox.id,
                inbox.name,
                inbox.response_business_days,
                open_,
                unassigned,
                overdue,
                urgent,
                oldest,
                len(hours),
                round(hours[len(hours) // 2], 1) if hours else None,
            )
        )
    return out


async def export_messaging(session: AsyncSession, principal: Principal, patient_id: int) -> dict[str, Any]:
    """The patient's conversations for the compartment export (identity.service.export_patient audits it)."""
    threads = (
        await session.execute(select(Thread).where(Thread.patient_id == patient_id).order_by(Thread.id))
    ).scalars()
    out = []
    for t in threads:
        inbox = await session.get(Inbox, t.inbox_id)
        messages = await repo.thread_messages(session, t.id)
        files = await repo.attachments_of(session, [m.id for m in messages])
        out.append(
            {
                "id": t.id,
                "team": inbox.name if inbox else "",
                "subject": t.subject,
                "status": str(t.status),
                "created_at": t.created_at.isoformat(),
                "messages": [
                    {
                        "from_patient": m.from_patient,
                        "body": m.body,
                        "sent_at": m.created_at.isoformat(),
                        "read_at": m.read_at.isoformat() if m.read_at else None,
                        "attachments": files.get(m.id, []),
                    }
                    for m in messages
                ],
            }
        )
    return {"threads": out}
