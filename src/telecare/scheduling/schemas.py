"""Request and response bodies for scheduling."""

from __future__ import annotations

from datetime import date, datetime, time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from telecare.core.params import BoundedId
from telecare.scheduling.models import AppointmentStatus, ExceptionKind, Modality, PatientKind

StateCode = Field(min_length=2, max_length=2, pattern=r"^[A-Za-z]{2}$")


class VisitTypeCreate(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    duration_minutes: int = Field(ge=5, le=480)
    modalities: list[Modality] = Field(min_length=1)
    patient_kind: PatientKind


class VisitTypeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    duration_minutes: int
    modalities: list[Modality]
    patient_kind: PatientKind
    active: bool


class TemplateCreate(BaseModel):
    practitioner_id: BoundedId
    weekday: int = Field(ge=0, le=6, description="Monday = 0")
    start_time: time
    end_time: time
    valid_from: date | None = None
    valid_until: date | None = None


class TemplateRead(TemplateCreate):
    model_config = ConfigDict(from_attributes=True)
    id: int


class ExceptionCreate(BaseModel):
    practitioner_id: BoundedId
    on_date: date
    start_time: time | None = None
    end_time: time | None = None
    kind: ExceptionKind = ExceptionKind.BLOCKED
    label: str | None = Field(default=None, max_length=120)


class ExceptionRead(ExceptionCreate):
    model_config = ConfigDict(from_attributes=True)
    id: int


class PolicyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    cancel_notice_hours: int
    checkin_opens_minutes: int
    noshow_grace_minutes: int
    reminder_offsets_minutes: list[int]
    slot_step_minutes: int
    min_booking_lead_minutes: int


class PolicyUpdate(BaseModel):
    cancel_notice_hours: int = Field(ge=0, le=24 * 14)
    checkin_opens_minutes: int = Field(ge=0, le=24 * 60)
    noshow_grace_minutes: int = Field(ge=1, le=240)
    reminder_offsets_minutes: list[int] = Field(max_length=5)
    slot_step_minutes: int = Field(ge=5, le=120)
    min_booking_lead_minutes: int = Field(ge=0, le=14 * 24 * 60)

    @field_validator("reminder_offsets_minutes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v <= 0 or v > 14 * 24 * 60 for v in value):
            raise ValueError("each offset must be between 1 minute and 14 days")
        return sorted(set(value), reverse=True)


class SlotRead(BaseModel):
    practitioner_id: int
    practitioner_name: str
    start_at: datetime
    end_at: datetime
    licence_basis: str


class UnlicensedRead(BaseModel):
    practitioner_id: int
    practitioner_name: str
    reasons: list[str]


class SlotSearchRead(BaseModel):
    state: str
    slots: list[SlotRead]
    unlicensed: list[UnlicensedRead]
    message: str | None = Field(description="Why no practitioner can be offered, when none can")


class AppointmentCreate(BaseModel):
    practitioner_id: BoundedId
    visit_type_id: BoundedId
    start_at: datetime
    modality: Modality
    expected_state: str = StateCode
    patient_id: BoundedId | None = Field(
        default=None, description="Coordinators: the patient; patients: omit"
    )

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("start_at needs a time zone offset")
        return value


class AppointmentReschedule(BaseModel):
    start_at: datetime
    practitioner_id: BoundedId | None = None

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("start_at needs a time zone offset")
        return value


class AppointmentCancel(BaseModel):
    reason: str | None = Field(default=None, max_length=200)


class AppointmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    patient_id: int
    practitioner_id: int
    visit_type_id: int
    start_at: datetime
    end_at: datetime
    modality: Modality
    booked_modality: Modality
    status: AppointmentStatus
    expected_state: str
    late_cancel: bool
    cancelled_at: datetime | None
    rescheduled_from_id: int | None
    licensure_blocked_at: datetime | None
    licensure_block_state: str | None
    noshow_at: datetime | None
