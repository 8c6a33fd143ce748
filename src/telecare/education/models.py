"""Education assignments: a clinician gives a patient an article of the library; the patient's reading of it
is recorded (first and last read, how many times) (docs/education.md#assignments)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class EducationAssignment(Base):
    """One article given to one patient. Giving the same article again keeps this row (and its reading
    record) and updates the note: a patient sees each article once in their list."""

    __tablename__ = "education_assignments"
    __table_args__ = (UniqueConstraint("patient_id", "article_slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    article_slug: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(Text, default="")  # the clinician's word to the patient
    # Where the assignment came from: "clinician", or "triage" with the encounter's id.
    source_kind: Mapped[str] = mapped_column(String(20), default="clinician")
    source_id: Mapped[str] = mapped_column(String(64), default="")
    assigned_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    first_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_count: Mapped[int] = mapped_column(Integer, default=0)
