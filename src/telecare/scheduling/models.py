"""Visit types, practitioner availability (weekly templates and exceptions in the practitioner's time zone),
the organization's scheduling rules, appointments and the reminders sent for them.

An appointment is also the visit (FHIR Encounter, class VR) once the patient checks in: its `status` is the
one visit state machine (see `telecare.visits.service`): a single place says where a visit is."""

from __future__ import annotations

import enum
from datetime import date, datetime, time

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class Modality(enum.StrEnum):
    VIDEO = "video"  # synchronous audio-video: modifier 95 (docs/billing-visits.md#modifiers)
    AUDIO = "audio"  # synchronous audio-only: modifier 93 (docs/billing-visits.md#modifiers)
    IN_PERSON = "in-person"


class PatientKind(enum.StrEnum):
    """New vs established patient: decides the E/M family 99202-99205 vs 99212-99215
    (docs/billing-visits.md#em-by-time)."""

    NEW = "new"
    ESTABLISHED = "established"


class AppointmentStatus(enum.StrEnum):
    """The visit state machine. Values follow FHIR R4 appointmentstatus where one exists
    (docs/fhir.md#appointment-and-encounter); `waiting` and `in_progress` refine FHIR `arrived`, `completed`
    maps to `fulfilled`."""

    BOOKED = "booked"
    CHECKED_IN = "checked_in"  # location attested, consent accepted, licensure re-checked
    WAITING = "waiting"  # in the virtual waiting room (the real-time half moves checked_in -> waiting)
    IN_PROGRESS = "in_progress"  # admitted by the clinician
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"


# Statuses that hold the practitioner's time: two of these may never overlap.
ACTIVE_STATUSES = (
    AppointmentStatus.BOOKED,
    AppointmentStatus.CHECKED_IN,
    AppointmentStatus.WAITING,
    AppointmentStatus.IN_PROGRESS,
)
_ACTIVE_SQL = "status IN ('booked', 'checked_in', 'waiting', 'in_progress')"


class ExceptionKind(enum.StrEnum):
    HOLIDAY = "holiday"
    BLOCKED = "blocked"


class VisitType(Base):
    __tablename__ = "visit_types"
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        CheckConstraint("duration_minutes > 0 AND duration_minutes <= 480", name="duration"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    modalities: Mapped[list[str]] = mapped_column(JSON)  # subset of Modality values
    patient_kind: Mapped[PatientKind] = mapped_column(String(12))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


# An organization's scheduling rules until it sets its own.
POLICY_DEFAULTS: dict[str, object] = {
    "cancel_notice_hours": 24,
    "checkin_opens_minutes": 30,
    "noshow_grace_minutes": 15,
    "reminder_offsets_minutes": [1440, 60],  # the day before and one hour before
    "slot_step_minutes": 15,
    "min_booking_lead_minutes": 60,
}


class SchedulingPolicy(Base):
    """One row per organization; absent means POLICY_DEFAULTS."""

    __tablename__ = "scheduling_policies"

    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    cancel_notice_hours: Mapped[int] = mapped_column(Integer)
    checkin_opens_minutes: Mapped[int] = mapped_column(Integer)
    noshow_grace_minutes: Mapped[int] = mapped_column(Integer)
    reminder_offsets_minutes: Mapped[list[int]] = mapped_column(JSON)
    slot_step_minutes: Mapped[int] = mapped_column(Integer)
    min_booking_lead_minutes: Mapped[int] = mapped_column(Integer)


class AvailabilityTemplate(Base):
    """A weekly recurring block of bookable time, as wall-clock time in the practitioner's time zone."""

    __tablename__ = "availability_templates"
    __table_args__ = (
        CheckConstraint("weekday >= 0 AND weekday <= 6", name="weekday"),
        CheckConstraint("start_time < end_time", name="order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    practitioner_id: Mapped[int] = mapped_column(
        ForeignKey("practitioners.id", ondelete="CASCADE"), index=True
    )
    weekday: Mapped[int] = mapped_column(Integer)  # Monday = 0, as datetime.weekday()
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)


class AvailabilityException(Base):
    """Time off the template on one local date (holiday: the whole day; blocked: start-end, or whole day)."""

    __tablename__ = "availability_exceptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    practitioner_id: Mapped[int] = mapped_column(
        ForeignKey("practitioners.id", ondelete="CASCADE"), index=True
    )
    on_date: Mapped[date] = mapped_column(Date)
    start_time: Mapped[time | None] = mapped_column(Time)
    end_time: Mapped[time | None] = mapped_column(Time)
    kind: Mapped[ExceptionKind] = mapped_column(String(10))
    label: Mapped[str | None] = mapped_column(String(120))  # "Thanksgiving": no patient data


class Appointment(Base):
    """A booked visit; after check-in it is the encounter. All times UTC."""

    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("start_at < end_at", name="order"),
        # Second line of defence against double booking (the service also locks the practitioner row):
        # no two active appointments of one practitioner start at the same instant.
        Index(
            "uq_appointments_active_start",
            "practitioner_id",
            "start_at",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
        Index("ix_appointments_practitioner_start", "practitioner_id", "start_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    visit_type_id: Mapped[int] = mapped_column(ForeignKey("visit_types.id"))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modality: Mapped[Modality] = mapped_column(String(10))  # current modality (switches are timeline events)
    booked_modality: Mapped[Modality] = mapped_column(String(10))
    status: Mapped[AppointmentStatus] = mapped_column(
        String(12), default=AppointmentStatus.BOOKED, index=True
    )
    expected_state: Mapped[str] = mapped_column(String(2))  # where the patient expects to be (USPS code)
    booked_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    cancel_reason: Mapped[str | None] = mapped_column(String(200))
    late_cancel: Mapped[bool] = mapped_column(Boolean, default=False)
    rescheduled_from_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    # Licensure gate outcome at check-in: when set, nobody may join and coordinators re-assign.
    licensure_blocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    licensure_block_state: Mapped[str | None] = mapped_column(String(2))
    noshow_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AppointmentReminder(Base):
    """One row per (appointment, offset) once sent: reminders are idempotent across task runs."""

    __tablename__ = "appointment_reminders"
    __table_args__ = (UniqueConstraint("appointment_id", "offset_minutes"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"), index=True)
    offset_minutes: Mapped[int] = mapped_column(Integer)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
