"""Writing and verifying the audit chain.

Each entry's MAC is HMAC-SHA256(key, prev_mac || canonical(entry)), the key coming from settings, never from
the database. The chain head row names the newest entry so that deleting the tail is detected too.
Writers serialise on the head row (row lock on PostgreSQL; SQLite transactions are BEGIN IMMEDIATE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit.models import AuditAction, AuditChainHead, AuditEntry, AuditOutcome, Purpose
from telecare.core.crypto import constant_time_equal, hmac_sha256
from telecare.core.db import as_uow
from telecare.core.time import utc_now

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    org_id: int | None
    role: str
    kind: str
    client_addr: str | None


SYSTEM_ACTOR = Actor(user_id=None, org_id=None, role="system", kind="system", client_addr=None)


def canonical(entry: AuditEntry) -> bytes:
    fields: list[Any] = [
        entry.id,
        entry.org_id,
        entry.at.isoformat(timespec="microseconds"),
        entry.actor_user_id,
        entry.actor_role,
        entry.actor_kind,
        entry.patient_id,
        entry.resource_type,
        entry.resource_id,
        entry.action,
        entry.outcome,
        entry.client_addr,
        entry.purpose,
        # Not `detail or {}`: that would let NULL, [], "" or false stand in for {} without breaking the MAC.
        entry.detail,
        entry.prev_mac,
    ]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def compute_mac(key: bytes, entry: AuditEntry) -> str:
    return hmac_sha256(key, canonical(entry))


async def _lock_head(session: AsyncSession) -> AuditChainHead:
    stmt = select(AuditChainHead).where(AuditChainHead.id == 1)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    head = (await session.execute(stmt)).scalar_one_or_none()
    if head is None:
        head = AuditChainHead(id=1, last_entry_id=0, last_mac=GENESIS)
        session.add(head)
        await session.flush()
    return head


async def record(
    session: AsyncSession,
    actor: Actor,
    *,
    key: bytes | None = None,
    action: AuditAction | str,
    resource_type: str,
    resource_id: str | int | None = None,
    patient_id: int | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    purpose: Purpose | str = Purpose.TREATMENT,
    org_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (the key defaults to the unit of work's)."""
    if key is None:
        key = as_uow(session).audit_key
    head = await _lock_head(session)
    # Ids are assigned here, under the chain lock, so they are consecutive and the MAC can cover them
    # before the row is written (the table rejects UPDATE).
    entry = AuditEntry(
        id=head.last_entry_id + 1,
        org_id=org_id if org_id is not None else actor.org_id,
        at=utc_now(),
        actor_user_id=actor.user_id,
        actor_role=actor.role,
        actor_kind=actor.kind,
        patient_id=patient_id,
        resource_type=resource_type,
        resource_id=None if resource_id is None else str(resource_id),
        action=str(action),
        outcome=str(outcome),
        client_addr=actor.client_addr,
        purpose=str(purpose),
        detail=detail or {},
        prev_mac=head.last_mac,
        mac="",
    )
    entry.mac = compute_mac(key, entry)
    session.add(entry)
    head.last_entry_id = entry.id
    head.last_mac = entry.mac
    await session.flush()
    return entry


@dataclass(frozen=True)
class EntrySpec:
    """One entry for `record_many`."""

    action: AuditAction | str
    resource_type: str
    resource_id: str | int | None = None
    patient_id: int | None = None
    org_id: int | None = None
    detail: dict[str, Any] | None = None


async def record_many(
    session: AsyncSession,
    actor: Actor,
    specs: list[EntrySpec],
    *,
    key: bytes,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    purpose: Purpose | str = Purpose.TREATMENT,
) -> None:
    """Append several entries under one chain lock and one flush (bulk ingestion audits each patient)."""
    if not specs:
        return
    head = await _lock_head(session)
    now = utc_now()
    entries = []
    for spec in specs:
        entry = AuditEntry(
            id=head.last_entry_id + 1,
            org_id=spec.org_id if spec.org_id is not None else actor.org_id,
            at=now,
            actor_user_id=actor.user_id,
            actor_role=actor.role,
            actor_kind=actor.kind,
            patient_id=spec.patient_id,
            resource_type=spec.resource_type,
            resource_id=None if spec.resource_id is None else str(spec.resource_id),
            action=str(spec.action),
            outcome=str(outcome),
            client_addr=actor.client_addr,
            purpose=str(purpose),
            detail=spec.detail or {},
            prev_mac=head.last_mac,
            mac="",
        )
        entry.mac = compute_mac(key, entry)
        entries.append(entry)
        head.last_entry_id = entry.id
        head.last_mac = entry.mac
    session.add_all(entries)
    await session.flush()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None
    head: tuple[int, str] | None = None  # (last entry id, its MAC): the anchor to keep outside the database


async def _entries(session: AsyncSession, batch: int = 5000) -> AsyncIterator[AuditEntry]:
    """Every row in id order, from the lowest id present: rows planted below 1 are walked, not skipped."""
    last: int | None = None
    while True:
        stmt = select(AuditEntry).order_by(AuditEntry.id).limit(batch)
        if last is not None:
            stmt = stmt.where(AuditEntry.id > last)
        rows = (await session.execute(stmt)).scalars().all()
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].id
        session.expunge_all()


async def verify_chain(
    session: AsyncSession, *, key: bytes, anchor: tuple[int, str] | None = None
) -> VerifyResult:
    """Walk the chain from the genesis; name the first entry whose MAC, link or position is wrong.

    The head row catches a deleted tail, but someone who deletes the tail *and* rewrites the head row
    leaves a valid, shorter chain. `anchor` is an (id, MAC) pair printed by an earlier run and kept outside
    the database (docs/security.md#audit-trail: anchor the head hash); that entry must still be as it was."""
    prev_mac = GENESIS
    prev_id = 0
    checked = 0
    async for entry in _entries(session):
        checked += 1
        if entry.id > prev_id + 1:
            return VerifyResult(
                False,
                checked,
                entry.id,
                f"entry {prev_id + 1} is missing: entry {entry.id} follows {prev_id}",
            )
        if entry.id != prev_id + 1:
            return VerifyResult(
                False,
                checked,
                entry.id,
                f"entry {entry.id} is out of sequence (expected {prev_id + 1}): inserted outside Telecare",
            )
        if not constant_time_equal(entry.prev_mac, prev_mac):
            return VerifyResult(
                False, checked, entry.id, f"entry {entry.id} does not link to entry {prev_id}"
            )
        if not constant_time_equal(entry.mac, compute_mac(key, entry)):
            return VerifyResult(False, checked, entry.id, f"entry {entry.id} was altered (MAC mismatch)")
        if anchor is not None and entry.id == anchor[0] and not constant_time_equal(entry.mac, anchor[1]):
            return VerifyResult(
                False, checked, entry.id, f"entry {entry.id} differs from the anchor: the chain was rewritten"
            )
        prev_mac, prev_id = entry.mac, entry.id
    if anchor is not None and anchor[0] > prev_id:
        return VerifyResult(
            False,
            checked,
            anchor[0],
            f"anchored entry {anchor[0]} is gone: the chain ends at entry {prev_id}",
        )
    head = (await session.execute(select(AuditChainHead).where(AuditChainHead.id == 1))).scalar_one_or_none()
    head_id, head_mac = (head.last_entry_id, head.last_mac) if head else (0, GENESIS)
    if head_id != prev_id or not constant_time_equal(head_mac, prev_mac):
        return VerifyResult(
            False,
            checked,
            head_id if head_id > prev_id else prev_id,
            f"chain head names entry {head_id} but the chain ends at entry {prev_id}: "
            "entries were deleted or appended outside Telecare",
        )
    return VerifyResult(True, checked, head=(prev_id, prev_mac))
