"""API shapes for identity. Never the ORM names; writes never carry role, org or owner fields
(mass assignment)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
)

from telecare.core.params import MAX_ID
from telecare.core.time import utc_now
from telecare.identity.geo import normalise_state
from telecare.identity.models import Role, Sex

State = Annotated[str, AfterValidator(normalise_state)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ().-]{7,20}$")]
Mrn = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9-]{1,64}$")]
Language = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
]
PostalCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{5}(-[0-9]{4})?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _birth_date_ok(value: date) -> date:
    if value > utc_now().date():
        raise ValueError("must not be in the future")
    if value.year < 1900:
        raise ValueError("must be after 1900")
    return value


class PatientCreate(Strict):
    mrn: Mrn
    given_name: Name
    family_name: Name
    birth_date: Annotated[date, AfterValidator(_birth_date_ok)]
    sex: Sex
    email: EmailStr | None = None
    phone: Phone | None = None
    address_line: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    city: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    state: State
    postal_code: PostalCode | None = None
    preferred_language: Language = "en"
    emergency_contact_name: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None
    ) = None
    emergency_contact_phone: Phone | None = None
    emergency_contact_relationship: Annotated[str, StringConstraints(max_length=60)] | None = None


class PatientUpdate(Strict):
    """Partial update of contact details. Identity fields (MRN, birth date) change through registration."""

    given_name: Name | None = None
    family_name: Name | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    address_line: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    city: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    state: State | None = None
    postal_code: PostalCode | None = None
    preferred_language: Language | None = None
    emergency_contact_name: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None
    ) = None
    emergency_contact_phone: Phone | None = None
    emergency_contact_relationship: Annotated[str, StringConstraints(max_length=60)] | None = None


class PatientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    sex: Sex
    email: str | None
    phone: str | None
    address_line: str | None
    city: str | None
    state: str
    postal_code: str | None
    preferred_language: str
    emergency_contact_name: str | None
    emergency_contact_phone: str | None
    emergency_contact_relationship: str | None


class PatientPage(BaseModel):
    items: list[PatientRead]
    total: int
    limit: int
    offset: int


class CareTeamMemberRead(BaseModel):
    id: int
    patient_id: int
    practitioner_id: int
    user_id: int
    display_name: str
    credentials: str
    role: str


class CareTeamMemberCreate(Strict):
    practitioner_id: int = Field(gt=0, le=MAX_ID)
    role: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)] = "member"


class LicenseRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    state: str
    license_type: str
    number: str
    issued_on: date
    expires_on: date
    source: str


class CompactPrivilegeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    compact: str
    home_state: str
    number: str
    issued_on: date
    expires_on: date


class PractitionerRead(BaseModel):
    id: int
    user_id: int
    display_name: str
    role: Role
    npi: str | None
    credentials: str
    specialties: list[str]
    residence_state: str | None
    licenses: list[LicenseRead]
    compact_privileges: list[CompactPrivilegeRead]


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    display_name: str
    role: Role
    is_active: bool
    totp_enrolled: bool
    created_at: datetime


class UserCreate(Strict):
    email: EmailStr
    display_name: Name
    role: Role
    password: Annotated[str, StringConstraints(min_length=12, max_length=256)]

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class UserUpdate(Strict):
    display_name: Name | None = None
    is_active: bool | None = None


class TokenCreate(Strict):
    user_id: int = Field(gt=0, le=MAX_ID)
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    scopes: list[
        Annotated[str, StringConstraints(pattern=r"^(user|patient|system)/(\*|[A-Za-z]+)\.[cruds]+$")]
    ] = Field(min_length=1, max_length=50)
    expires_in_days: int | None = Field(default=None, gt=0, le=365)


class TokenRead(BaseModel):
    id: int
    user_id: int
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str


class BreakGlassRequest(Strict):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=1000)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class BreakGlassRead(BaseModel):
    id: int
    patient_id: int
    user_id: int
    created_at: datetime
    expires_at: datetime


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_user_id: int | None
    actor_role: str
    patient_id: int | None
    resource_type: str
    resource_id: str | None
    action: str
    outcome: str
    purpose: str
    client_addr: str | None


class PatientCountByState(BaseModel):
    state: str
    patients: int
