"""Request and response bodies for check-in, the visit state machine, notes and surveys."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from telecare.core.params import BoundedId
from telecare.identity.geo import normalise_state
from telecare.scheduling.models import AppointmentStatus, Modality
from telecare.visits.models import LocationType, ModalityChangeReason, NoteStatus, VisitEventKind


class CheckIn(BaseModel):
    location_type: LocationType
    address_line: str = Field(min_length=3, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    state: str = Field(min_length=2, max_length=2)
    postal_code: str | None = Field(default=None, max_length=10)
    callback_phone: str | None = Field(default=None, max_length=40)
    consent_text_id: BoundedId = Field(description="The consent version the patient read and accepts")
    consent_accepted: bool

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        return normalise_state(value)


class CheckInResult(BaseModel):
    appointment_id: int
    status: AppointmentStatus
    can_join: bool
    reasons: list[str]


class ModalitySwitch(BaseModel):
    to_modality: Modality
    reason: ModalityChangeReason


class VisitEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    kind: VisitEventKind
    at: datetime
    from_modality: str | None
    to_modality: str | None
    reason: str | None


class ConsentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    version: int
    title: str
    body: str
    published_at: datetime


class ConsentCreate(BaseModel):
    # Unknown fields are refused (422 naming them): an `org_id` must not be silently dropped while the text
    # is published into the caller's own organization (mass assignment, OWASP API3).
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=20, max_length=20_000)


class NoteUpdate(BaseModel):
    provider_location_type: str | None = Field(default=None, pattern="^(site|home)$")
    provider_city: str | None = Field(default=None, max_length=100)
    provider_state: str | None = Field(default=None, min_length=2, max_length=2)
    identity_verified: bool | None = None
    identity_method: str | None = Field(default=None, max_length=120)
    practitioner_video_capable: bool | None = None
    audio_only_reason: ModalityChangeReason | None = None
    participants_note: str | None = Field(default=None, max_length=2000)
    history: str | None = Field(default=None, max_length=20_000)
    exam: str | None = Field(default=None, max_length=20_000)
    exam_limitations: str | None = Field(default=None, max_length=5000)
    assessment: str | None = Field(default=None, max_length=20_000)
    plan: str | None = Field(default=None, max_length=20_000)
    in_person_followup: str | None = Field(default=None, max_length=5000)
    technical_issues: str | None = Field(default=None, max_length=5000)
    patient_summary: str | None = Field(default=None, max_length=10_000)
    total_minutes: int | None = Field(default=None, ge=1, le=600)

    @field_validator("provider_state")
    @classmethod
    def _state(cls, value: str | None) -> str | None:
        return normalise_state(value) if value else value


class NoteRead(NoteUpdate):
    model_config = ConfigDict(from_attributes=True)
    id: int | None  # null for a draft not saved yet (nothing stored until the clinician's first save)
    appointment_id: int
    status: NoteStatus
    signed_at: datetime | None
    signed_facts: dict[str, object] | None


class AddendumCreate(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)


class SurveyCreate(BaseModel):
    rating: int = Field(ge=1, le=5)
    would_recommend: bool
    comment: str | None = Field(default=None, max_length=2000)
