"""Store-and-forward dermatology: a skin case (body site, short history, at least two photos) that a
dermatologist of the organization's dermatology queue answers asynchronously (docs/dermatology.md)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class BodySite(enum.StrEnum):
    """Where the concern is (docs/dermatology.md#workflow). Plain slugs: no SNOMED CT body-structure codes
    are mapped yet (unverified which value set a FHIR Media.bodySite should carry)."""

    SCALP = "scalp"
    FACE = "face"
    NECK = "neck"
    CHEST = "chest"
    ABDOMEN = "abdomen"
    BACK = "back"
    ARM_LEFT = "arm_left"
    ARM_RIGHT = "arm_right"
    HAND_LEFT = "hand_left"
    HAND_RIGHT = "hand_right"
    LEG_LEFT = "leg_left"
    LEG_RIGHT = "leg_right"
    FOOT_LEFT = "foot_left"
    FOOT_RIGHT = "foot_right"
    GENITAL = "genital"
    OTHER = "other"


class SkinCaseStatus(enum.StrEnum):
    SUBMITTED = "submitted"  # in the dermatology queue, nobody reviewing yet
    IN_REVIEW = "in_review"  # a dermatologist took it
    MORE_PHOTOS_REQUESTED = "more_photos_requested"  # waiting for the patient's new photos
    ANSWERED = "answered"  # assessment and plan given
    CONVERTED = "converted"  # turned into a video or in-person visit


class SkinOutcome(enum.StrEnum):
    ASSESSMENT_PLAN = "assessment_plan"
    MORE_PHOTOS = "more_photos"
    VIDEO_VISIT = "video_visit"
    IN_PERSON_VISIT = "in_person_visit"


class PhotoRole(enum.StrEnum):
    CLOSE_UP = "close_up"
    CONTEXT = "context"  # wider view that shows where on the body
    EXTRA = "extra"


class SkinCase(Base):
    """The skin concern with its history and, once answered, the asynchronous encounter's documentation."""

    __tablename__ = "skin_cases"
    __table_args__ = (
        Index("ix_skin_cases_patient_site", "patient_id", "body_site"),
        Index("ix_skin_cases_org_status", "org_id", "status"),
        UniqueConstraint("submitted_by_user_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    submitted_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    body_site: Mapped[BodySite] = mapped_column(String(20))
    duration: Mapped[str] = mapped_column(String(200))
    changing: Mapped[bool] = mapped_column(Boolean, default=False)
    symptoms: Mapped[str] = mapped_column(Text, default="")
    prior_treatment: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[SkinCaseStatus] = mapped_column(String(24), default=SkinCaseStatus.SUBMITTED)
    reviewer_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    review_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[SkinOutcome | None] = mapped_column(String(20))
    assessment: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str | None] = mapped_column(Text)
    photos_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))


class SkinPhoto(Base):
    """One accepted photo of a case (a stored file, owner kind "skin_case"), with the quality it passed."""

    __tablename__ = "skin_photos"
    __table_args__ = (UniqueConstraint("file_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("skin_cases.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[str] = mapped_column(String(32))
    role: Mapped[PhotoRole] = mapped_column(String(10))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sharpness: Mapped[float] = mapped_column(Float)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
