"""Triage encounters: a nurse's (or the patient's own, before booking) run of one protocol, with the
patient's location taken first, every answer as given, the disposition and red flags reached, and the SBAR
note the nurse signs (docs/triage.md#nurse-triage)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class TriageMode(enum.StrEnum):
    NURSE = "nurse"  # a nurse or physician triages (phone, message, video)
    SELF = "self"  # the patient in the portal, before booking


class TriageStatus(enum.StrEnum):
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


class TriageEncounter(Base):
    __tablename__ = "triage_encounters"
    __table_args__ = (Index("ix_triage_patient_started", "patient_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    mode: Mapped[TriageMode] = mapped_column(String(8))
    protocol_id: Mapped[str] = mapped_column(String(60))
    protocol_version: Mapped[str] = mapped_column(String(20))
    started_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # Where the patient is now, confirmed before the first question (docs/triage.md#location-first).
    location_state: Mapped[str] = mapped_column(String(2))
    location_detail: Mapped[str] = mapped_column(Text, default="")
    callback_phone: Mapped[str] = mapped_column(String(40), default="")
    status: Mapped[TriageStatus] = mapped_column(String(12), default=TriageStatus.IN_PROGRESS)
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # question id -> answer id
    disposition: Mapped[str | None] = mapped_column(String(20))
    red_flags: Mapped[list[str]] = mapped_column(JSON, default=list)  # red-flag ids reached
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # SBAR note: drafted from the answers at completion, edited and signed by the nurse (nurse mode).
    sbar: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
