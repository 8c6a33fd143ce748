"""Remote patient monitoring: devices and their keys, RPM enrolment, readings, per-patient targets,
alerts, and logged time for RPM billing."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class DeviceType(enum.StrEnum):
    BP_CUFF = "bp_cuff"
    GLUCOSE_METER = "glucose_meter"
    CGM = "cgm"
    PULSE_OXIMETER = "pulse_oximeter"
    SCALE = "scale"
    THERMOMETER = "thermometer"
    ACTIVITY_TRACKER = "activity_tracker"
    GATEWAY = "gateway"  # a hub that relays several measures


class ReadingSource(enum.StrEnum):
    NATIVE = "native"
    FHIR = "fhir"
    NIGHTSCOUT = "nightscout"
    MANUAL = "manual"


class Tier(enum.StrEnum):
    """Alert tiers (docs/rpm.md#alert-tiers: info -> review within 24 h -> same-day call -> immediate)."""

    IMMEDIATE = "immediate"
    SAME_DAY = "same_day"
    WITHIN_24H = "within_24h"
    INFO = "info"

    @property
    def rank(self) -> int:
        return [Tier.IMMEDIATE, Tier.SAME_DAY, Tier.WITHIN_24H, Tier.INFO].index(self)


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class TimeKind(enum.StrEnum):
    CALL = "call"  # real-time interactive (audio)
    VIDEO = "video"  # real-time interactive (audio-video)
    MESSAGE = "message"  # asynchronous: counts as management time, not as the interactive communication
    MANAGEMENT = "management"  # treatment management without the patient (review, care coordination)
    INTERPRETATION = "interpretation"  # physician/QHP data collection and interpretation (99091)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("org_id", "serial_norm"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    device_type: Mapped[DeviceType] = mapped_column(String(30))
    manufacturer: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(100))
    serial: Mapped[str] = mapped_column(String(100))
    # Upper-cased, whitespace and separators removed: the device identity used for deduplication.
    serial_norm: Mapped[str] = mapped_column(String(100))
    udi: Mapped[str | None] = mapped_column(String(200))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("device_keys.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class DeviceAssignment(Base):
    __tablename__ = "device_assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class DeviceKey(Base):
    """A gateway or vendor credential. Shown once as `tcdk_<id>_<secret>`; stored as a SHA-256 digest."""

    __tablename__ = "device_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NightscoutSecret(Base):
    """A patient's Nightscout API secret. Uploaders send SHA-1(secret) in `api-secret`; we keep only
    SHA-256 of that digest, so the table holds nothing an uploader could replay."""

    __tablename__ = "nightscout_secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RpmEnrolment(Base):
    """The RPM episode: consent, ordering practitioner and programs. Its start opens the 99453 set-up."""

    __tablename__ = "rpm_enrolments"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    ordering_practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    programs: Mapped[list[str]] = mapped_column(JSON, default=list)
    consent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consent_method: Mapped[str] = mapped_column(String(20))  # verbal | written | electronic
    consent_recorded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    started_on: Mapped[date] = mapped_column(Date)
    ended_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Reading(Base):
    """One normalised measurement (canonical UCUM unit, UTC) with what the device sent."""

    __tablename__ = "readings"
    __table_args__ = (Index("ix_readings_patient_kind_time", "patient_id", "kind", "measured_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    source: Mapped[ReadingSource] = mapped_column(String(12))
    kind: Mapped[str] = mapped_column(String(20))
    code: Mapped[str] = mapped_column(String(20))  # LOINC
    value: Mapped[float] = mapped_column(Float)  # systolic for blood pressure
    value2: Mapped[float | None] = mapped_column(Float)  # diastolic for blood pressure
    unit: Mapped[str] = mapped_column(String(20))  # canonical UCUM
    orig_value: Mapped[float] = mapped_column(Float)
    orig_value2: Mapped[float | None] = mapped_column(Float)
    orig_unit: Mapped[str] = mapped_column(String(20))
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)
    utc_offset_minutes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    device_reading_id: Mapped[str | None] = mapped_column(String(100))
    device_label: Mapped[str | None] = mapped_column(String(100))  # e.g. Nightscout `device` as sent
    trend: Mapped[str | None] = mapped_column(String(20))  # CGM direction (Nightscout)
    # SHA-256 over patient | normalised device | kind | device reading id or exact measured-at time
    # (docs/security.md#idempotent-ingestion): replays and backfills of the same reading collide here.
    identity_hash: Mapped[str] = mapped_column(String(64), unique=True)
    entered_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(String(500))


class ThresholdOverride(Base):
    """A clinician's per-patient change to one rule (who and why; also in the audit trail). Versions do not
    overlap: setting a new one closes the previous, so late readings are judged by the version in force."""

    __tablename__ = "rpm_threshold_overrides"
    __table_args__ = (Index("ix_rpm_overrides_patient_rule", "patient_id", "rule_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    rule_code: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    confirm_minutes: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str] = mapped_column(String(500))
    set_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    effective_to: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Alert(Base):
    __tablename__ = "rpm_alerts"
    __table_args__ = (Index("ix_rpm_alerts_status_deadline", "status", "deadline_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    rule_code: Mapped[str] = mapped_column(String(40))
    tier: Mapped[Tier] = mapped_column(String(12))
    status: Mapped[AlertStatus] = mapped_column(String(12), default=AlertStatus.OPEN)
    # "patient:rule" while not resolved, NULL afterwards: the database keeps one open alert per patient and
    # rule even under concurrent writers.
    open_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    pool: Mapped[str] = mapped_column(String(20), default="nurses")
    title: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(String(500))
    first_measured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_measured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reading_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    ack_note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolution_note: Mapped[str | None] = mapped_column(Text)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_to_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class AlertReading(Base):
    __tablename__ = "rpm_alert_readings"

    alert_id: Mapped[int] = mapped_column(ForeignKey("rpm_alerts.id", ondelete="CASCADE"), primary_key=True)
    reading_id: Mapped[int] = mapped_column(ForeignKey("readings.id", ondelete="CASCADE"), primary_key=True)


class TimeEntry(Base):
    __tablename__ = "rpm_time_entries"
    __table_args__ = (Index("ix_rpm_time_patient_at", "patient_id", "performed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("rpm_enrolments.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[TimeKind] = mapped_column(String(16))
    minutes: Mapped[int] = mapped_column(Integer)
    performed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
