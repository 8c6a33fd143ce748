"""Interprofessional e-consults: specialty queues and their specialists, consult requests with the patient's
verbal consent, the conversation on a consult (clarifying questions), logged time on both sides, and the
answer (docs/econsult.md)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class ConsultStatus(enum.StrEnum):
    """FHIR Task.status values (docs/econsult.md#workflow)."""

    REQUESTED = "requested"  # in the specialty's queue
    IN_PROGRESS = "in-progress"  # accepted by a specialist
    ON_HOLD = "on-hold"  # the specialist asked the requester a clarifying question
    COMPLETED = "completed"  # answered
    REJECTED = "rejected"  # declined by the specialty (with a reason)
    CANCELLED = "cancelled"  # withdrawn by the requester


class Urgency(enum.StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


class ConsultOutcome(enum.StrEnum):
    ADVICE = "advice"  # assessment and recommendations for the requester to carry out
    VISIT_RECOMMENDED = "visit_recommended"  # the specialist should see the patient


class ConsultQueue(Base):
    """A specialty's e-consult queue (cardiology, dermatology ...)."""

    __tablename__ = "consult_queues"
    __table_args__ = (UniqueConstraint("org_id", "specialty"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    specialty: Mapped[str] = mapped_column(String(64))  # slug, e.g. "cardiology"
    name: Mapped[str] = mapped_column(String(120))
    routine_business_days: Mapped[int] = mapped_column(Integer, default=3)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class ConsultQueueMember(Base):
    __tablename__ = "consult_queue_members"
    __table_args__ = (UniqueConstraint("queue_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("consult_queues.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class Consult(Base):
    """The consult order (FHIR ServiceRequest) with its workflow state (Task)."""

    __tablename__ = "consults"
    __table_args__ = (
        Index("ix_consults_queue_status", "queue_id", "status"),
        UniqueConstraint("requester_user_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("consult_queues.id"))
    requester_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    question: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    urgency: Mapped[Urgency] = mapped_column(String(10), default=Urgency.ROUTINE)
    # The patient's verbal consent, recorded by the requester (docs/econsult.md#consent).
    consent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consent_note: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[ConsultStatus] = mapped_column(String(12), default=ConsultStatus.REQUESTED)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    specialist_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[ConsultOutcome | None] = mapped_column(String(20))
    assessment: Mapped[str | None] = mapped_column(Text)
    recommendations: Mapped[str | None] = mapped_column(Text)
    verbal_discussion: Mapped[bool] = mapped_column(Boolean, default=False)
    closed_reason: Mapped[str | None] = mapped_column(String(500))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))


class ConsultNote(Base):
    """The conversation on a consult: clarifying questions and answers between requester and specialist."""

    __tablename__ = "consult_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id", ondelete="CASCADE"), index=True)
    author_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    from_specialist: Mapped[bool] = mapped_column(Boolean)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class ConsultAttachment(Base):
    __tablename__ = "consult_attachments"
    __table_args__ = (UniqueConstraint("file_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[str] = mapped_column(String(32))  # files domain (owner kind "econsult")


class ConsultTimeEntry(Base):
    """Minutes on a consult, by side (requester or consultant) and whether spent in the verbal discussion."""

    __tablename__ = "consult_time"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    side: Mapped[str] = mapped_column(String(12))  # econsult.rules.Side
    billing_class: Mapped[str] = mapped_column(String(20))  # messaging.rules.BillingClass at the time
    minutes: Mapped[int] = mapped_column(Integer)
    verbal: Mapped[bool] = mapped_column(Boolean, default=False)
    activity: Mapped[str] = mapped_column(String(200))
    performed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
