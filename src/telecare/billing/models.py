"""Proposed billing lines derived when a visit note is signed, and coordinators' adjustments with reasons."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class BillingLineStatus(enum.StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    VOID = "void"


class BillingLine(Base):
    __tablename__ = "billing_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    service_date: Mapped[datetime] = mapped_column(UTCDateTime)
    cpt_code: Mapped[str | None] = mapped_column(String(5))  # None: time below every threshold
    modifiers: Mapped[list[str]] = mapped_column(JSON, default=list)
    place_of_service: Mapped[str] = mapped_column(String(2))
    units: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[BillingLineStatus] = mapped_column(String(10), default=BillingLineStatus.PROPOSED)
    rationale: Mapped[list[str]] = mapped_column(JSON, default=list)  # why each value was chosen
    facts: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)  # the inputs of the derivation
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)


class BillingAdjustment(Base):
    """One change to a billing line: what, from, to, why and who."""

    __tablename__ = "billing_adjustments"

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("billing_lines.id", ondelete="CASCADE"), index=True)
    field: Mapped[str] = mapped_column(String(20))
    old_value: Mapped[str | None] = mapped_column(String(60))
    new_value: Mapped[str | None] = mapped_column(String(60))
    reason: Mapped[str] = mapped_column(String(500))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
