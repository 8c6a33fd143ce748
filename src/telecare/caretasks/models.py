"""Care-team tasks (FHIR Task): work that must reach a clinician now, with a deadline for acknowledgement
and escalation when nobody acknowledges it (docs/caretasks.md#lifecycle)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class TaskStatus(enum.StrEnum):
    """FHIR Task.status values used here."""

    REQUESTED = "requested"  # raised, nobody has acknowledged it yet
    ACCEPTED = "accepted"  # a clinician acknowledged it and owns it
    COMPLETED = "completed"  # done, with what was done


class TaskPriority(enum.StrEnum):
    """FHIR request-priority, least to most urgent."""

    ROUTINE = "routine"
    URGENT = "urgent"
    ASAP = "asap"
    STAT = "stat"


OPEN_STATUSES = (TaskStatus.REQUESTED, TaskStatus.ACCEPTED)


class CareTask(Base):
    __tablename__ = "care_tasks"
    __table_args__ = (
        UniqueConstraint("patient_id", "kind", "source_kind", "source_id"),
        Index("ix_care_tasks_org_status", "org_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))  # "phq9-item9", "triage-crisis", "clinician"
    priority: Mapped[TaskPriority] = mapped_column(String(10))
    status: Mapped[TaskStatus] = mapped_column(String(12), default=TaskStatus.REQUESTED)
    title: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text, default="")
    # What raised it (a QuestionnaireResponse id, a triage encounter id): one open task per source.
    source_kind: Mapped[str] = mapped_column(String(40), default="")
    source_id: Mapped[str] = mapped_column(String(64), default="")
    raised_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    assignee_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str | None] = mapped_column(Text)
