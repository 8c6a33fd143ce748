"""Care-team task actions (docs/caretasks.md).

`raise_task` is how another domain's action hands the care team work that must not wait in an inbox: a
PHQ-9 item-9 answer, a triage crisis. It runs inside the caller's unit of work (the task commits with the
answer that caused it, or not at all), audits, and publishes `caretask.changed` (ids only) after commit.
Clinicians list, acknowledge and complete tasks through the policy (Resource.CARE_TASK); a clock-driven
sweep escalates any task nobody acknowledged by its deadline (docs/caretasks.md#escalation)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.access.service import ReachOf
from telecare.audit import service as audit
from telecare.audit.models import AuditAction, Purpose
from telecare.auth.principal import Principal
from telecare.caretasks.models import OPEN_STATUSES, CareTask, TaskPriority, TaskStatus
from telecare.core.db import as_uow
from telecare.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import CareTeamMember, Patient, Practitioner, Role, User
from telecare.notifications.service import notify

TOPIC = "caretask.changed"
# Roles an unassigned task reaches in its organization (docs/caretasks.md#who-sees-a-task).
POOL_ROLES = (str(Role.PHYSICIAN), str(Role.NURSE))
MAX_TEXT = 4000


class TaskNotFound(NotFound):
    code = "care_task_not_found"
    title = "Task not found"


class TaskStateConflict(Conflict):
    code = "care_task_state"
    title = "The task is not in a state that allows this"


def task_patients(reach: ReachOf) -> Select[int]:
    """A care relationship: a clinician reaches the patient of a task assigned to them, acknowledged or
    completed by them, and (physicians and nurses) of an open task nobody is assigned to in their
    organization: a safety task for a patient without a care team must still reach someone."""
    pool_member = exists(
        select(User.id).where(User.id == reach.user_id, User.role.in_(POOL_ROLES), User.is_active.is_(True))
    )
    return select(CareTask.patient_id).where(
        CareTask.org_id == reach.org_id,
        or_(
            CareTask.assignee_user_id == reach.user_id,
            CareTask.acknowledged_by_user_id == reach.user_id,
            CareTask.completed_by_user_id == reach.user_id,
            and_(
                CareTask.assignee_user_id.is_(None),
                CareTask.status.in_([str(s) for s in OPEN_STATUSES]),
                pool_member,
            ),
        ),
    )


async def primary_physician(session: AsyncSession, patient_id: int) -> int | None:
    """The patient's care-team physician (the one whose team role names "primary" first), or None."""
    rows = await session.execute(
        select(User.id, CareTeamMember.role)
        .join(Practitioner, Practitioner.user_id == User.id)
        .join(CareTeamMember, CareTeamMember.practitioner_id == Practitioner.id)
        .where(
            CareTeamMember.patient_id == patient_id,
            User.role == str(Role.PHYSICIAN),
            User.is_active.is_(True),
        )
        .order_by(CareTeamMember.id)
    )
    found = rows.all()
    for user_id, team_role in found:
        if "primary" in (team_role or ""):
            return int(user_id)
    return int(found[0][0]) if found else None


def _publish(session: AsyncSession, task: CareTask, change: str) -> None:
    as_uow(session).publish(
        TOPIC,
        {
            "task_id": task.id,
            "org_id": task.org_id,
            "patient_id": task.patient_id,
            "priority": str(task.priority),
            "change": change,
        },
    )


async def raise_task(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    kind: str,
    title: str,
    detail: str,
    priority: str = "urgent",
    due_within: timedelta = timedelta(hours=1),
    source_kind: str = "",
    source_id: str = "",
    assignee_user_id: int | None = None,
) -> CareTask:
    """Raise a task for the patient's care team in the caller's transaction. `principal` is whoever caused
    it (the patient submitting an answer, the nurse triaging); the caller has already authorised that
    action on the patient, so raising the task needs no grant of its own. One task per (patient, kind,
    source): raising it again returns the existing one. `priority` is a FHIR Task.priority ("routine",
    "urgent", "asap", "stat"). Without an assignee the task goes to the patient's care-team physician, and
    without one to the organization's physicians and nurses (task_patients)."""
    level = TaskPriority(priority)
    if source_kind or source_id:
        existing = await _by_source(session, patient_id, kind, source_kind, source_id)
        if existing is not None:
            return existing
    patient = await session.get(Patient, patient_id)
    if patient is None:
        raise TaskNotFound("The patient of the task does not exist.")
    if assignee_user_id is None:
        assignee_user_id = await primary_physician(session, patient_id)
    now = utc_now()
    task = CareTask(
        org_id=patient.org_id,
        patient_id=patient_id,
        kind=kind,
        priority=level,
        status=TaskStatus.REQUESTED,
        title=title[:200],
        detail=detail[:MAX_TEXT],
        source_kind=source_kind,
        source_id=source_id,
        raised_by_user_id=None if principal.kind == "system" else principal.user_id,
        assignee_user_id=assignee_user_id,
        created_at=now,
        due_at=now + due_within,
    )
    try:
        async with session.begin_nested():
            session.add(task)
            await session.flush()
    except IntegrityError:
        found = await _by_source(session, patient_id, kind, source_kind, source_id)
        if found is None:
            raise
        return found
    await access.record_access(
        session,
        principal,
        resource=Resource.CARE_TASK,
        action=Action.CREATE,
        patient_id=patient_id,
        resource_id=task.id,
        detail={"kind": kind, "priority": str(level), "source": f"{source_kind}/{source_id}"},
    )
    _publish(session, task, "raised")
    return task


async def _by_source(
    session: AsyncSession, patient_id: int, kind: str, source_kind: str, source_id: str
) -> CareTask | None:
    return (
        await session.execute(
            select(CareTask).where(
                CareTask.patient_id == patient_id,
                CareTask.kind == kind,
                CareTask.source_kind == source_kind,
                CareTask.source_id == source_id,
            )
        )
    ).scalar_one_or_none()


async def create_task(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    title: str,
    detail: str = "",
    priority: str = "routine",
    due_in_hours: int = 24,
    assignee_user_id: int | None = None,
) -> CareTask:
    """A clinician caring for the patient hands the team a task (a call-back, a follow-up)."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.CARE_TASK, action=Action.CREATE
    )
    errors = []
    if not title.strip():
        errors.append(FieldError("title", "required"))
    if len(title) > 200:
        errors.append(FieldError("title", "<= 200 characters"))
    if len(detail) > MAX_TEXT:
        errors.append(FieldError("detail", f"<= {MAX_TEXT} characters"))
    if priority not in {str(p) for p in TaskPriority}:
        errors.append(FieldError("priority", "routine, urgent, asap or stat"))
    if not 1 <= due_in_hours <= 24 * 30:
        errors.append(FieldError("due_in_hours", "between 1 and 720"))
    if assignee_user_id is not None:
        user = await session.get(User, assignee_user_id)
        if user is None or user.org_id != principal.org_id or not Role(user.role).is_clinician:
            errors.append(FieldError("assignee_user_id", "a clinician of this organization"))
    if errors:
        raise ValidationFailed("The task is not valid.", errors=errors)
    return await raise_task(
        session,
        principal,
        patient_id=patient_id,
        kind="clinician",
        title=title.strip(),
        detail=detail.strip(),
        priority=priority,
        due_within=timedelta(hours=due_in_hours),
        source_kind="",
        source_id=f"u{principal.user_id}:{utc_now().timestamp():.6f}",
        assignee_user_id=assignee_user_id or principal.user_id,
    )


async def _task(session: AsyncSession, principal: Principal, task_id: int, action: Action) -> CareTask:
    return await access.open_patient_record(
        session,
        principal,
        CareTask,
        task_id,
        resource=Resource.CARE_TASK,
        action=action,
        not_found=TaskNotFound,
    )


@dataclass
class TaskRow:
    id: int
    patient_id: int
    patient_name: str
    mrn: str
    kind: str
    priority: str
    status: str
    title: str
    detail: str
    assignee_user_id: int | None
    assignee_name: str
    acknowledged_by_name: str
    created_at: datetime
    due_at: datetime
    acknowledged_at: datetime | None
    escalated_at: datetime | None
    completed_at: datetime | None
    outcome: str | None
    overdue: bool

    def as_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


_RANK = {TaskPriority.STAT: 0, TaskPriority.ASAP: 1, TaskPriority.URGENT: 2, TaskPriority.ROUTINE: 3}


async def _rows(session: AsyncSession, tasks: list[CareTask]) -> list[TaskRow]:
    patient_ids = {t.patient_id for t in tasks}
    people_ids = {u for t in tasks for u in (t.assignee_user_id, t.acknowledged_by_user_id) if u is not None}
    patients: dict[int, tuple[str, str]] = {}
    if patient_ids:
        rows = await session.execute(
            select(Patient.id, Patient.given_name, Patient.family_name, Patient.mrn).where(
                Patient.id.in_(patient_ids)
            )
        )
        patients = {int(i): (f"{g} {f}", str(m)) for i, g, f, m in rows.all()}
    names: dict[int, str] = {}
    if people_ids:
        rows2 = await session.execute(select(User.id, User.display_name).where(User.id.in_(people_ids)))
        names = {int(a): str(b) for a, b in rows2.all()}
    now = utc_now()
    return [
        TaskRow(
            id=t.id,
            patient_id=t.patient_id,
            patient_name=patients.get(t.patient_id, ("", ""))[0],
            mrn=patients.get(t.patient_id, ("", ""))[1],
            kind=t.kind,
            priority=str(t.priority),
            status=str(t.status),
            title=t.title,
            detail=t.detail,
            assignee_user_id=t.assignee_user_id,
            assignee_name=names.get(t.assignee_user_id or 0, ""),
            acknowledged_by_name=names.get(t.acknowledged_by_user_id or 0, ""),
            created_at=t.created_at,
            due_at=t.due_at,
            acknowledged_at=t.acknowledged_at,
            escalated_at=t.escalated_at,
            completed_at=t.completed_at,
            outcome=t.outcome,
            overdue=t.status == TaskStatus.REQUESTED and t.due_at < now,
        )
        for t in tasks
    ]


async def list_tasks(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str = "open",
    patient_id: int | None = None,
) -> list[TaskRow]:
    """Tasks of the patients in the caller's reach: `open` (requested or acknowledged), most urgent and
    oldest first, or `completed` (latest first). Audited per patient returned."""
    if status not in ("open", "completed"):
        raise ValidationFailed("Unknown status filter.", errors=[FieldError("status", "open or completed")])
    scope = access.patient_scope(principal, Resource.CARE_TASK, Action.SEARCH)
    stmt = select(CareTask).where(
        CareTask.org_id == principal.org_id, CareTask.patient_id.in_(scope.scalar_subquery())
    )
    if patient_id is not None:
        stmt = stmt.where(CareTask.patient_id == patient_id)
    if status == "open":
        stmt = stmt.where(CareTask.status.in_([str(s) for s in OPEN_STATUSES])).order_by(CareTask.due_at)
    else:
        stmt = stmt.where(CareTask.status == str(TaskStatus.COMPLETED)).order_by(CareTask.completed_at.desc())
    tasks = list((await session.execute(stmt.limit(500))).scalars())
    if status == "open":
        tasks.sort(
            key=lambda t: (t.status != TaskStatus.REQUESTED, _RANK[TaskPriority(t.priority)], t.due_at)
        )
    await access.record_search(
        session,
        principal,
        resource=Resource.CARE_TASK,
        patient_ids=[t.patient_id for t in tasks],
        query={"status": status, "patient_id": patient_id},
    )
    return await _rows(session, tasks)


async def get_task(session: AsyncSession, principal: Principal, *, task_id: int) -> TaskRow:
    task = await _task(session, principal, task_id, Action.READ)
    return (await _rows(session, [task]))[0]


async def acknowledge(session: AsyncSession, principal: Principal, *, task_id: int) -> CareTask:
    """The clinician takes the task: the deadline stops running and the task is theirs."""
    task = await _task(session, principal, task_id, Action.UPDATE)
    if task.status != TaskStatus.REQUESTED:
        raise TaskStateConflict(f"The task is {task.status}.")
    task.status = TaskStatus.ACCEPTED
    task.acknowledged_at = utc_now()
    task.acknowledged_by_user_id = principal.user_id
    task.assignee_user_id = principal.user_id
    await session.flush()
    await _audit_update(session, principal, task, "acknowledged")
    _publish(session, task, "acknowledged")
    return task


async def complete(session: AsyncSession, principal: Principal, *, task_id: int, outcome: str) -> CareTask:
    """Close the task with what was done (for item 9: the risk assessment and its result). An open task
    is acknowledged by whoever completes it, if nobody had."""
    task = await _task(session, principal, task_id, Action.UPDATE)
    if task.status not in OPEN_STATUSES:
        raise TaskStateConflict(f"The task is {task.status}.")
    if not outcome.strip():
        raise ValidationFailed("Say what was done.", errors=[FieldError("outcome", "required")])
    if len(outcome) > MAX_TEXT:
        raise ValidationFailed("Too long.", errors=[FieldError("outcome", f"<= {MAX_TEXT} characters")])
    now = utc_now()
    if task.acknowledged_at is None:
        task.acknowledged_at = now
        task.acknowledged_by_user_id = principal.user_id
    task.status = TaskStatus.COMPLETED
    task.completed_at = now
    task.completed_by_user_id = principal.user_id
    task.outcome = outcome.strip()
    await session.flush()
    await _audit_update(session, principal, task, "completed")
    _publish(session, task, "completed")
    return task


async def _audit_update(session: AsyncSession, principal: Principal, task: CareTask, change: str) -> None:
    await access.record_access(
        session,
        principal,
        resource=Resource.CARE_TASK,
        action=Action.UPDATE,
        patient_id=task.patient_id,
        resource_id=task.id,
        detail={"change": change},
    )


# ---- escalation (clock-driven) ---------------------------------------------------------------------------


async def escalate_overdue(session: AsyncSession) -> int:
    """Escalate each task nobody acknowledged by its deadline, once: notify the patient's care-team
    physicians, the assignee, and, when the patient has no physician, every active physician of the
    organization (docs/caretasks.md#escalation). The notification carries no clinical content."""
    key = as_uow(session).audit_key
    now = utc_now()
    overdue = list(
        (
            await session.execute(
                select(CareTask)
                .where(
                    CareTask.status == str(TaskStatus.REQUESTED),
                    CareTask.due_at < now,
                    CareTask.escalated_at.is_(None),
                )
                .order_by(CareTask.id)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
    )
    for task in overdue:
        task.escalated_at = now
        recipients: set[int] = set()
        team = await session.execute(
            select(User.id)
            .join(Practitioner, Practitioner.user_id == User.id)
            .join(CareTeamMember, CareTeamMember.practitioner_id == Practitioner.id)
            .where(
                CareTeamMember.patient_id == task.patient_id,
                User.role == str(Role.PHYSICIAN),
                User.is_active.is_(True),
            )
        )
        recipients.update(int(u) for u in team.scalars())
        if task.assignee_user_id is not None:
            recipients.add(task.assignee_user_id)
        if not recipients or task.assignee_user_id is None:
            org = await session.execute(
                select(User.id).where(
                    User.org_id == task.org_id, User.role == str(Role.PHYSICIAN), User.is_active.is_(True)
                )
            )
            recipients.update(int(u) for u in org.scalars())
        for user_id in sorted(recipients):
            await notify(
                session,
                org_id=task.org_id,
                kind="caretask.escalated",
                subject="An urgent care-team task is past its deadline",
                body="A task nobody has acknowledged is past its deadline. Open it to act.",
                recipient_user_id=user_id,
                link=f"/tasks/{task.id}",
            )
        await audit.record(
            session,
            audit.SYSTEM_ACTOR,
            key=key,
            action=AuditAction.UPDATE,
            resource_type=str(Resource.CARE_TASK),
            resource_id=task.id,
            patient_id=task.patient_id,
            org_id=task.org_id,
            purpose=Purpose.TREATMENT,
            detail={"change": "escalated", "notified": sorted(recipients)},
        )
        _publish(session, task, "escalated")
    return len(overdue)


async def export_tasks(session: AsyncSession, principal: Principal, patient_id: int) -> dict[str, Any]:
    """The patient's care tasks for the compartment export (identity.service.export_patient audits it)."""
    rows = await session.execute(
        select(CareTask).where(CareTask.patient_id == patient_id).order_by(CareTask.id)
    )
    tasks = [
        {
            "id": t.id,
            "kind": t.kind,
            "priority": str(t.priority),
            "status": str(t.status),
            "title": t.title,
            "created_at": t.created_at.isoformat(),
            "due_at": t.due_at.isoformat(),
            "acknowledged_at": t.acknowledged_at.isoformat() if t.acknowledged_at else None,
            "escalated_at": t.escalated_at.isoformat() if t.escalated_at else None,
            "completed_at": t.completed_at.isoformat() if t.completed_at else None,
            "outcome": t.outcome,
        }
        for t in rows.scalars()
    ]
    return {"care_tasks": tasks}
