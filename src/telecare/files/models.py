"""Stored files: one row per uploaded photo or document; its bytes live, encrypted, in the blob store
(core/blobs.py) under `storage_key` (docs/files.md)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime
from telecare.core.time import utc_now


class FileKind(enum.StrEnum):
    """What the content turned out to be (decided from the bytes, never from the name)."""

    IMAGE = "image"
    PDF = "pdf"


class StoredFile(Base):
    __tablename__ = "stored_files"
    __table_args__ = (
        Index("ix_stored_files_patient_created", "patient_id", "created_at"),
        Index("ix_stored_files_owner", "owner_kind", "owner_id"),
    )

    # 32 random hex characters, chosen before the row is written: the encryption binds it
    # (docs/files.md#associated-data), and ids in URLs cannot be enumerated.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    # Every stored file is a patient's health data (docs/files.md#the-record).
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    # The record it belongs to ("message", "skin_case", ...): set when the owner is created, possibly later
    # in the same transaction as the upload; NULL until then.
    owner_kind: Mapped[str | None] = mapped_column(String(40))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(32), unique=True)
    # The object's data key, AES-256-GCM-sealed under the master key (docs/files.md#key-wrapping).
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[FileKind] = mapped_column(String(10))
    content_type: Mapped[str] = mapped_column(String(50))  # detected: image/jpeg, image/png, application/pdf
    byte_size: Mapped[int] = mapped_column(Integer)  # of the stored plaintext (after re-encoding)
    sha256: Mapped[str] = mapped_column(String(64))  # of the stored plaintext
    display_name: Mapped[str] = mapped_column(String(120))  # sanitised; shown only, never a path
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
