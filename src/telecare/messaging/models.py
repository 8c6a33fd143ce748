"""Secure messaging: team inboxes and their members, threads between a patient and an inbox, messages with
their attachments (stored files, also filed to the chart), read state, logged clinician time for online
digital E/M, and the organisation's holidays that response-time targets skip (docs/messaging.md)."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class InboxKind(enum.StrEnum):
    PRIMARY_CARE = "primary_care"
    BEHAVIORAL_HEALTH = "behavioral_health"
    PHARMACY = "pharmacy"
    REMOTE_MONITORING = "remote_monitoring"
    SPECIALTY = "specialty"
    BILLING = "billing"
    OTHER = "other"


class ThreadStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Priority(enum.StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"  # emergency wording in a patient's message (docs/messaging.md#emergency-wording)


class Inbox(Base):
    """A team's shared inbox: patients write to the team, not to a person."""

    __tablename__ = "inboxes"
    __table_args__ = (UniqueConstraint("org_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[InboxKind] = mapped_column(String(30))
    # Response-time target: a patient's message is due this many business days after it arrives
    # (docs/messaging.md#response-time-targets).
    response_business_days: Mapped[int] = mapped_column(Integer, default=2)
    patients_may_write: Mapped[bool] = mapped_column(Boolean, default=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class InboxMember(Base):
    __tablename__ = "inbox_members"
    __table_args__ = (UniqueConstraint("inbox_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Thread(Base):
    """A conversation between one patient and one inbox."""

    __tablename__ = "message_threads"
    __table_args__ = (
        Index("ix_message_threads_inbox_status", "inbox_id", "status"),
        Index("ix_message_threads_patient", "patient_id", "last_message_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id"))
    subject: Mapped[str] = mapped_column(String(200))
    status: Mapped[ThreadStatus] = mapped_column(String(10), default=ThreadStatus.OPEN)
    priority: Mapped[Priority] = mapped_column(String(10), default=Priority.ROUTINE)
    patient_initiated: Mapped[bool] = mapped_column(Boolean)
    started_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # Set when a patient's message waits for the team (cleared by a staff reply or by closing): the
    # response clock runs from `awaiting_since` to `due_at` (docs/messaging.md#response-time-targets).
    awaiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A physician's or qualified professional's first review starts the online digital E/M window
    # (docs/messaging.md#online-digital-em).
    first_review_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_review_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # A retried send with the same Idempotency-Key finds the first one
        # (docs/messaging.md#idempotent-sending).
        UniqueConstraint("sender_user_id", "idempotency_key"),
        Index("ix_messages_thread", "thread_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("message_threads.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    sender_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    from_patient: Mapped[bool] = mapped_column(Boolean)
    body: Mapped[str] = mapped_column(Text)
    emergency_terms: Mapped[list[str]] = mapped_column(JSON, default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_digest: Mapped[str | None] = mapped_column(String(64))  # what the key was first used for
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # Read receipt: when the other side (the patient, or anyone on the team) first read it.
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class MessageAttachment(Base):
    __tablename__ = "message_attachments"
    __table_args__ = (UniqueConstraint("message_id", "position"), UniqueConstraint("file_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[str] = mapped_column(String(32))  # files domain's stored file (owner kind "message")
    position: Mapped[int] = mapped_column(Integer)


class ThreadTime(Base):
    """Minutes a clinician spent on a thread (review, reply, orders), for online digital E/M."""

    __tablename__ = "message_thread_time"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("message_threads.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # Whose time it is for the codes (messaging.rules.BillingClass), from role and credentials at the time.
    billing_class: Mapped[str] = mapped_column(String(20))
    minutes: Mapped[int] = mapped_column(Integer)
    activity: Mapped[str] = mapped_column(String(200))
    performed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Holiday(Base):
    """A day the organisation's teams are closed: response-time targets skip it."""

    __tablename__ = "org_holidays"
    __table_args__ = (UniqueConstraint("org_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    day: Mapped[date] = mapped_column(Date)
    name: Mapped[str] = mapped_column(String(120))
