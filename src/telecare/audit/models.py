"""Append-only, HMAC-chained audit trail (45 CFR 164.312(b); docs/security.md#goal-10 and #goal-11)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from telecare.core.db import Base, UTCDateTime


class AuditAction(enum.StrEnum):
    READ = "read"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXPORT = "export"
    LOGIN = "login"
    LOGOUT = "logout"
    BREAK_GLASS = "break-glass"
    ADMIN = "admin"


class AuditOutcome(enum.StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"


class Purpose(enum.StrEnum):
    """HL7 v3 PurposeOfUse codes (used by IHE BALP AuditEvent.purposeOfEvent)."""

    TREATMENT = "TREAT"
    EMERGENCY = "ETREAT"
    OPERATIONS = "HOPERAT"
    PATIENT_REQUEST = "PATRQT"
    PAYMENT = "HPAYMT"
    SYSTEM = "SYSADMIN"


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # set by the chain
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)  # no FK: entries outlive users
    actor_role: Mapped[str] = mapped_column(String(20))
    actor_kind: Mapped[str] = mapped_column(String(12))  # session | token | device | system | anonymous
    patient_id: Mapped[int | None] = mapped_column(Integer, index=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(10))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(10))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # ids and codes only, never PHI
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """Single row naming the newest entry: makes deleting the tail of the chain detectable."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_entry_id: Mapped[int] = mapped_column(Integer, default=0)
    last_mac: Mapped[str] = mapped_column(String(64))
