"""Messaging queries, each starting from the principal's patient scope (access.service.patient_scope)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.access.service import ReachOf
from telecare.auth.principal import Principal
from telecare.identity.models import Patient, User
from telecare.messaging.models import (
    Inbox,
    InboxMember,
    Message,
    MessageAttachment,
    Thread,
    ThreadStatus,
    ThreadTime,
)


def inbox_patients(reach: ReachOf) -> Select[int]:
    """A care relationship: a clinician reaches the patients who have a thread in an inbox they belong to
    (the team answering a patient needs the chart). `reach`'s ids may be bind parameters."""
    return (
        select(Thread.patient_id)
        .join(InboxMember, InboxMember.inbox_id == Thread.inbox_id)
        .where(InboxMember.user_id == reach.user_id, Thread.org_id == reach.org_id)
    )


def readable_threads(principal: Principal, action: Action = Action.READ) -> Select[Any]:
    scope = access.patient_scope(principal, Resource.COMMUNICATION, action)
    return select(Thread).where(
        Thread.org_id == principal.org_id, Thread.patient_id.in_(scope.scalar_subquery())
    )


async def member_inbox_ids(session: AsyncSession, principal: Principal) -> list[int]:
    rows = await session.execute(
        select(InboxMember.inbox_id)
        .join(Inbox, Inbox.id == InboxMember.inbox_id)
        .where(InboxMember.user_id == principal.user_id, Inbox.org_id == principal.org_id)
    )
    return list(rows.scalars())


async def is_member(session: AsyncSession, inbox_id: int, user_id: int) -> bool:
    row = await session.execute(
        select(InboxMember.id).where(InboxMember.inbox_id == inbox_id, InboxMember.user_id == user_id)
    )
    return row.first() is not None


async def inboxes(session: AsyncSession, org_id: int, *, active_only: bool = True) -> list[Inbox]:
    stmt = select(Inbox).where(Inbox.org_id == org_id)
    if active_only:
        stmt = stmt.where(Inbox.is_active.is_(True))
    return list((await session.execute(stmt.order_by(Inbox.name))).scalars())


async def members(session: AsyncSession, inbox_id: int) -> list[tuple[int, str, str]]:
    rows = await session.execute(
        select(User.id, User.display_name, User.role)
        .join(InboxMember, InboxMember.user_id == User.id)
        .where(InboxMember.inbox_id == inbox_id, User.is_active.is_(True))
        .order_by(User.display_name)
    )
    return [(int(a), str(b), str(c)) for a, b, c in rows.all()]


async def thread_messages(session: AsyncSession, thread_id: int) -> list[Message]:
    rows = await session.execute(select(Message).where(Message.thread_id == thread_id).order_by(Message.id))
    return list(rows.scalars())


async def attachments_of(session: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[str]]:
    if not message_ids:
        return {}
    rows = await session.execute(
        select(MessageAttachment.message_id, MessageAttachment.file_id)
        .where(MessageAttachment.message_id.in_(list(message_ids)))
        .order_by(MessageAttachment.message_id, MessageAttachment.position)
    )
    out: dict[int, list[str]] = {}
    for mid, fid in rows.all():
        out.setdefault(int(mid), []).append(str(fid))
    return out


async def message_by_key(session: AsyncSession, user_id: int, key: str) -> Message | None:
    row = await session.execute(
        select(Message).where(Message.sender_user_id == user_id, Message.idempotency_key == key)
    )
    return row.scalar_one_or_none()


async def user_names(session: AsyncSession, user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    rows = await session.execute(select(User.id, User.display_name).where(User.id.in_(user_ids)))
    return {int(a): str(b) for a, b in rows.all()}


async def patient_names(session: AsyncSession, patient_ids: set[int]) -> dict[int, tuple[str, str]]:
    if not patient_ids:
        return {}
    rows = await session.execute(
        select(Patient.id, Patient.given_name, Patient.family_name, Patient.mrn).where(
            Patient.id.in_(patient_ids)
        )
    )
    return {int(i): (f"{g} {f}", str(m)) for i, g, f, m in rows.all()}


def unread_messages(from_patient: bool) -> Any:
    """Messages the other side has not read yet: a count per thread, as a subquery."""
    return (
        select(Message.thread_id, func.count(Message.id).label("unread"))
        .where(Message.from_patient.is_(from_patient), Message.read_at.is_(None))
        .group_by(Message.thread_id)
        .subquery()
    )


async def time_entries(session: AsyncSession, thread_id: int) -> list[ThreadTime]:
    rows = await session.execute(
        select(ThreadTime).where(ThreadTime.thread_id == thread_id).order_by(ThreadTime.performed_at)
    )
    return list(rows.scalars())


def overdue(now: datetime) -> Any:
    return and_(Thread.status == ThreadStatus.OPEN, Thread.due_at.is_not(None), Thread.due_at < now)
