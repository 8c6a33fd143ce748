"""Questionnaire assignments (once or on a schedule), responses with every answer as given, and the total
score derived from a complete response (an Observation, US Core Screening Assessment shape)
(docs/questionnaires.md#storage)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class ResponseStatus(enum.StrEnum):
    """FHIR QuestionnaireResponse.status values used here."""

    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


class QuestionnaireAssignment(Base):
    __tablename__ = "questionnaire_assignments"
    __table_args__ = (Index("ix_qn_assign_patient", "patient_id", "active"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    questionnaire: Mapped[str] = mapped_column(String(40))  # definition slug
    assigned_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    every_days: Mapped[int | None] = mapped_column(Integer)  # None: once
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the next occurrence
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    last_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class QuestionnaireAnswerSet(Base):
    """One QuestionnaireResponse: every answer as given (`{linkId: value}`), saved as it is given."""

    __tablename__ = "questionnaire_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    questionnaire: Mapped[str] = mapped_column(String(40))
    questionnaire_version: Mapped[str] = mapped_column(String(20))
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("questionnaire_assignments.id"), index=True)
    status: Mapped[ResponseStatus] = mapped_column(String(12), default=ResponseStatus.IN_PROGRESS)
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # who entered the answers
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a safety answer (PHQ-9 item 9 above "not at all") was first saved: the crisis panel and task.
    crisis_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class QuestionnaireScore(Base):
    """The total score of a complete response with its severity band (Observation, derivedFrom the QR)."""

    __tablename__ = "questionnaire_scores"
    __table_args__ = (UniqueConstraint("response_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("questionnaire_responses.id", ondelete="CASCADE"))
    questionnaire: Mapped[str] = mapped_column(String(40))
    loinc: Mapped[str] = mapped_column(String(20))
    value: Mapped[int] = mapped_column(Integer)
    band: Mapped[str] = mapped_column(String(40))
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
