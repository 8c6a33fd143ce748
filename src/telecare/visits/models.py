"""What happens in a visit: check-in location attestation, telehealth consent, the timeline, who took part,
the note with its addenda, and the patient's satisfaction survey. The visit is the appointment
(`telecare.scheduling.models.Appointment`); every row here points at it by `appointment_id`."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class LocationType(enum.StrEnum):
    """Where the patient is: decides POS 10 (home) vs 02 (other) (docs/billing-visits.md#place-of-service)."""

    HOME = "home"
    OTHER = "other"


class VisitEventKind(enum.StrEnum):
    CHECKED_IN = "checked_in"
    ENTERED_WAITING_ROOM = "entered_waiting_room"
    ADMITTED = "admitted"
    CONNECTED = "connected"
    MODALITY_CHANGED = "modality_changed"
    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    ENDED = "ended"
    LICENSURE_BLOCKED = "licensure_blocked"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"


class ModalityChangeReason(enum.StrEnum):
    """Why a visit left video. The first two are the Medicare audio-only conditions
    (docs/documentation.md#audio-only-condition: patient at home cannot use, or does not consent to, video);
    the third is a technical fallback."""

    PATIENT_LACKS_VIDEO = "patient_lacks_video"
    PATIENT_DECLINED_VIDEO = "patient_declined_video"
    CONNECTION_QUALITY = "connection_quality"
    VIDEO_RESTORED = "video_restored"  # switching back to video


class ParticipantRole(enum.StrEnum):
    PATIENT = "patient"
    PRACTITIONER = "practitioner"
    INTERPRETER = "interpreter"
    CAREGIVER = "caregiver"


class NoteStatus(enum.StrEnum):
    DRAFT = "draft"
    SIGNED = "signed"


class CheckInAttestation(Base):
    """Where the patient says they physically are at check-in (licensure, POS, emergency dispatch)."""

    __tablename__ = "checkin_attestations"

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), unique=True
    )
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    location_type: Mapped[LocationType] = mapped_column(String(8))
    address_line: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(2))
    postal_code: Mapped[str | None] = mapped_column(String(10))
    callback_phone: Mapped[str | None] = mapped_column(String(40))
    attested_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    attested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class ConsentText(Base):
    """The organization's telehealth consent, versioned; a new text is a new version, never an edit."""

    __tablename__ = "consent_texts"
    __table_args__ = (UniqueConstraint("org_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    published_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class ConsentAcceptance(Base):
    __tablename__ = "consent_acceptances"
    __table_args__ = (UniqueConstraint("appointment_id", "consent_text_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    consent_text_id: Mapped[int] = mapped_column(ForeignKey("consent_texts.id"))
    version: Mapped[int] = mapped_column(Integer)
    accepted_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class VisitEvent(Base):
    """The visit timeline. Append-only by convention (services only insert)."""

    __tablename__ = "visit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"), index=True)
    kind: Mapped[VisitEventKind] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("visit_participants.id"))
    from_modality: Mapped[str | None] = mapped_column(String(10))
    to_modality: Mapped[str | None] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, object] | None] = mapped_column(JSON)


class VisitParticipant(Base):
    """Everyone in the visit. Guests (interpreter, caregiver) join with a one-time invitation token, stored
    as its SHA-256 digest, that expires when the visit's slot ends."""

    __tablename__ = "visit_participants"

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"), index=True)
    role: Mapped[ParticipantRole] = mapped_column(String(12))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    display_name: Mapped[str] = mapped_column(String(200))
    invite_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invite_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invited_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class VisitNote(Base):
    """The clinician's note with the telehealth elements of docs/documentation.md#required-elements. Locked
    once signed."""

    __tablename__ = "visit_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    status: Mapped[NoteStatus] = mapped_column(String(8), default=NoteStatus.DRAFT)
    platform: Mapped[str] = mapped_column(String(60), default="Telecare WebRTC")
    provider_location_type: Mapped[str | None] = mapped_column(String(12))  # site | home
    provider_city: Mapped[str | None] = mapped_column(String(100))
    provider_state: Mapped[str | None] = mapped_column(String(2))
    identity_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    identity_method: Mapped[str | None] = mapped_column(String(120))
    practitioner_video_capable: Mapped[bool | None] = mapped_column(Boolean)  # audio-only condition
    audio_only_reason: Mapped[str | None] = mapped_column(String(40))  # ModalityChangeReason value
    participants_note: Mapped[str | None] = mapped_column(Text)  # others present (assisting MA ...)
    history: Mapped[str | None] = mapped_column(Text)
    exam: Mapped[str | None] = mapped_column(Text)
    exam_limitations: Mapped[str | None] = mapped_column(Text)
    assessment: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str | None] = mapped_column(Text)
    in_person_followup: Mapped[str | None] = mapped_column(Text)  # when an in-person visit is needed
    technical_issues: Mapped[str | None] = mapped_column(Text)
    patient_summary: Mapped[str | None] = mapped_column(Text)  # plain-language summary for the portal
    total_minutes: Mapped[int | None] = mapped_column(Integer)  # clinician's total time on the date
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Facts frozen at signing (modality history, locations, consent, participants, times) so the signed
    # document never changes when other rows do.
    signed_facts: Mapped[dict[str, object] | None] = mapped_column(JSON)


class VisitNoteAddendum(Base):
    __tablename__ = "visit_note_addenda"

    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("visit_notes.id", ondelete="CASCADE"), index=True)
    author_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class SurveyResponse(Base):
    """Post-visit satisfaction survey (one per visit)."""

    __tablename__ = "survey_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    rating: Mapped[int] = mapped_column(Integer)  # 1..5
    would_recommend: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
