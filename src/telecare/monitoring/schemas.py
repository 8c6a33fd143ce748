"""API shapes for monitoring. Never the ORM names."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from telecare.core.params import BoundedId
from telecare.monitoring.codes import Kind, Program
from telecare.monitoring.models import AlertStatus, DeviceType, Tier, TimeKind

Text100 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class NativeReading(BaseModel):
    """One reading on the native batch door. Blood pressure uses `systolic` and `diastolic`; every other kind
    uses `value`. `measured_at` must carry its UTC offset (RFC 3339)."""

    model_config = ConfigDict(extra="forbid")

    device: Text100 = Field(description="Serial number of a registered device")
    reading_id: Text100 | None = Field(default=None, description="The device's own id for this reading")
    measured_at: AwareDatetime
    kind: Kind
    value: Finite | None = None
    systolic: Finite | None = None
    diastolic: Finite | None = None
    unit: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]


class ItemResult(BaseModel):
    index: int
    status: str  # created | duplicate | rejected
    id: int | None = None


class ItemError(BaseModel):
    index: int
    field: str
    detail: str


class BatchResult(BaseModel):
    received: int
    created: int
    duplicates: int
    rejected: int
    alerts_opened: int
    items: list[ItemResult]
    errors: list[ItemError]


class ReadingRead(BaseModel):
    id: int
    patient_id: int
    device_id: int | None
    source: str
    kind: str
    code: str
    value: float
    value2: float | None
    unit: str
    orig_value: float
    orig_value2: float | None
    orig_unit: str
    measured_at: datetime
    utc_offset_minutes: int
    device_reading_id: str | None
    trend: str | None
    note: str | None

    model_config = ConfigDict(from_attributes=True)


class ManualReading(BaseModel):
    """A reading typed in by the patient or a clinician."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    measured_at: AwareDatetime
    value: Finite | None = None
    systolic: Finite | None = None
    diastolic: Finite | None = None
    unit: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_type: DeviceType
    manufacturer: Text100
    model: Text100
    serial: Text100
    udi: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


class DeviceRead(BaseModel):
    id: int
    device_type: str
    manufacturer: str
    model: str
    serial: str
    udi: str | None
    key_id: int | None

    model_config = ConfigDict(from_attributes=True)


class AssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: BoundedId
    started_at: AwareDatetime | None = None


class EnrolmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ordering_practitioner_id: BoundedId
    programs: list[Program] = Field(min_length=1)
    consent_at: AwareDatetime
    consent_method: Annotated[str, StringConstraints(pattern=r"^(verbal|written|electronic)$")]
    started_on: date | None = None


class EnrolmentRead(BaseModel):
    id: int
    patient_id: int
    ordering_practitioner_id: int
    programs: list[str]
    consent_at: datetime
    consent_method: str
    started_on: date
    ended_on: date | None

    model_config = ConfigDict(from_attributes=True)


class OverrideSet(BaseModel):
    """Change one rule for one patient. `params` names the rule's parameters (see GET .../rules)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Finite] = Field(default_factory=dict)
    confirm_minutes: Annotated[int, Field(ge=1, le=240)] | None = None
    enabled: bool = True
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]


class RuleRead(BaseModel):
    code: str
    title: str
    tier: Tier
    kinds: list[str]
    params: dict[str, float]
    confirm_minutes: int | None
    enabled: bool
    source: str
    overridden: bool
    override_reason: str | None = None
    override_by_user_id: int | None = None


class AlertRead(BaseModel):
    id: int
    patient_id: int
    rule_code: str
    tier: Tier
    status: AlertStatus
    title: str
    detail: str
    reading_count: int
    first_measured_at: datetime | None
    last_measured_at: datetime | None
    created_at: datetime
    deadline_at: datetime | None
    acknowledged_at: datetime | None
    ack_note: str | None
    resolved_at: datetime | None
    resolution_note: str | None
    escalated_at: datetime | None
    escalated_to_user_id: int | None

    model_config = ConfigDict(from_attributes=True)


class AlertNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Note


class TimeEntryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: TimeKind
    minutes: Annotated[int, Field(ge=1, le=240)]
    performed_at: AwareDatetime | None = None
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None


class TimeEntryRead(BaseModel):
    id: int
    patient_id: int
    user_id: int
    kind: TimeKind
    minutes: int
    performed_at: datetime
    note: str | None

    model_config = ConfigDict(from_attributes=True)


class DeviceKeyCreated(BaseModel):
    id: int
    key: str
    device_ids: list[int]


class BillingLineRead(BaseModel):
    code: str
    description: str
    units: int
    status: str
    facts: dict[str, Any]


class BillingRowRead(BaseModel):
    patient_id: int
    patient_name: str
    mrn: str
    enrolment_id: int
    lines: list[BillingLineRead]
    facts: dict[str, Any]
