"""Append-only, HMAC-sealed audit trail (45 CFR 164.312(b); docs/security.md#goal-10, docs/audit.md).

A request writes its `AuditEntry` (with the entry's own MAC) and an `AuditPending` row in its transaction,
taking no lock; the sealer links entries into the chain in `AuditSeal` rows (insert-only like the entries)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, Sequence, String
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

    # Assigned by audit.service before the insert (the MAC covers it; the table rejects UPDATE): from
    # AUDIT_ENTRY_IDS on PostgreSQL, MAX(id) + 1 under SQLite's single writer. Not the chain position.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
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
    # "" for entries written since the sealer (0004_audit_seals); entries written before it were chained
    # directly and keep their predecessor's MAC here. Either way the entry's MAC covers it.
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))  # HMAC of the entry alone (canonical(entry))


# PostgreSQL only (SQLite has no sequences): ids without a lock, in the order writers asked for them.
AUDIT_ENTRY_IDS = Sequence("audit_entries_id_seq", metadata=Base.metadata)


class AuditPending(Base):
    """Entries written but not yet sealed: the sealer's queue. Inserted with the entry, deleted by the seal
    (not append-only: the entry stays, and `verify` reports one left unsealed beyond the window)."""

    __tablename__ = "audit_pending"

    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # no FK: see seals


class AuditSeal(Base):
    """An entry's place in the HMAC chain, in sealing order. Insert-only (triggers reject UPDATE/DELETE).

    mac = HMAC(key, [seq, entry_id, entry's MAC, sealed_at, prev_mac]); no foreign key to the entry, so
    that a deleted entry is reported by `verify` rather than refused by the database the attacker controls."""

    __tablename__ = "audit_seals"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    entry_id: Mapped[int] = mapped_column(Integer, unique=True)
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """Single row naming the newest seal: makes deleting the tail of the chain detectable."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_mac: Mapped[str] = mapped_column(String(64))
