"""Request and response bodies of the messaging API."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from telecare.core.params import BoundedId
from telecare.messaging.models import InboxKind


class InboxCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    slug: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: InboxKind
    response_business_days: int = Field(default=2, ge=0, le=10)
    patients_may_write: bool = True
    org_id: BoundedId | None = Field(default=None, description="The caller's organization (the default)")


class InboxRead(BaseModel):
    id: int
    name: str
    slug: str
    kind: str
    response_business_days: int
    patients_may_write: bool


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: BoundedId


class HolidayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    name: str = Field(default="Holiday", max_length=120)


class AttachmentRead(BaseModel):
    id: str
    name: str
    content_type: str
    byte_size: int
    width: int | None
    height: int | None
    url: str


class MessageRead(BaseModel):
    id: int
    thread_id: int
    from_patient: bool
    sender_user_id: int
    sender_name: str
    body: str
    created_at: datetime
    read_at: datetime | None
    attachments: list[AttachmentRead]


class ThreadSummary(BaseModel):
    id: int
    subject: str
    status: str
    priority: str
    patient_id: int
    inbox_id: int
    inbox_name: str
    assigned_user_id: int | None
    last_message_at: datetime
    due_at: datetime | None
    overdue: bool
    unread: int


class ThreadRead(BaseModel):
    id: int
    subject: str
    status: str
    priority: str
    patient_id: int
    inbox_id: int
    inbox_name: str
    patient_initiated: bool
    assigned_user_id: int | None
    created_at: datetime
    due_at: datetime | None
    first_review_at: datetime | None
    closed_at: datetime | None
    messages: list[MessageRead]


class SendResponse(BaseModel):
    thread_id: int
    message: MessageRead
    created: bool
    emergency_guidance: list[str] = Field(
        default_factory=list,
        description="Shown to the patient at once when the message has emergency wording",
    )


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee_user_id: BoundedId | None


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inbox_id: BoundedId


class TimeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minutes: int = Field(ge=1, le=240)
    activity: str = Field(default="review", max_length=200)


class ReadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    up_to_message_id: BoundedId | None = None


class UnreadRead(BaseModel):
    total: int
    by_inbox: dict[int, int]
    overdue: int


class DigitalEmRead(BaseModel):
    code: str | None
    minutes: int
    window_start: datetime | None
    window_end: datetime | None
    final: bool
    reasons: list[str]
