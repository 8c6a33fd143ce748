"""Writing, sealing and verifying the audit trail (docs/audit.md).

A request's transaction writes its entry *unchained*: the entry's MAC is HMAC-SHA256(key, canonical(entry))
and an `audit_pending` row queues it, with no lock shared between requests, so no access to health data
commits without its entry. The sealer (audit/sealer.py) then links entries into the chain in sealing order:
seal n is HMAC(key, [n, entry id, entry MAC, sealed_at, MAC of seal n-1]), and the head row names the newest
seal so that deleting the tail is detected too. The key comes from settings, never from the database."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit.models import (
    AUDIT_ENTRY_IDS,
    AuditAction,
    AuditChainHead,
    AuditEntry,
    AuditOutcome,
    AuditPending,
    AuditSeal,
    Purpose,
)
from telecare.audit.sealer import GENESIS as GENESIS
from telecare.audit.sealer import seal_batch as seal_batch
from telecare.audit.sealer import seal_mac, sealer_for
from telecare.audit.writer import AuditWriter
from telecare.core.crypto import constant_time_equal, hmac_sha256
from telecare.core.db import Database, UnitOfWork, as_uow
from telecare.core.time import utc_now

log = logging.getLogger(__name__)

UNCHAINED = ""  # prev_mac of an entry written since the sealer: its place in the chain is its seal


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


def _dialect(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else "sqlite"


async def _entry_ids(session: AsyncSession, n: int) -> list[int]:
    """`n` fresh entry ids without a lock held to commit: a sequence on PostgreSQL (gaps from rolled-back
    transactions are harmless: the chain is the seals', not the ids'); on SQLite, whose transactions are
    BEGIN IMMEDIATE (one writer at a time), the next ids after the largest any audit table names (so that an
    id is never reused, even after rows were deleted behind Telecare's back)."""
    if _dialect(session) == "postgresql":
        if n == 1:
            return [int((await session.execute(select(AUDIT_ENTRY_IDS.next_value()))).scalar_one())]
        rows = await session.execute(
            text("SELECT nextval('audit_entries_id_seq') FROM generate_series(1, :n)"), {"n": n}
        )
        return sorted(int(v) for v in rows.scalars())
    top = (await session.execute(_SQLITE_TOP)).scalar_one() or 0
    return list(range(max(top, 0) + 1, max(top, 0) + 1 + n))


_SQLITE_TOP = text(
    "SELECT MAX(COALESCE((SELECT MAX(id) FROM audit_entries), 0),"
    " COALESCE((SELECT MAX(entry_id) FROM audit_seals), 0),"
    " COALESCE((SELECT MAX(entry_id) FROM audit_pending), 0))"
)


def _nudge_sealer(session: AsyncSession) -> None:
    """Once per unit of work that wrote entries: wake the sealer after it commits."""
    if not isinstance(session, UnitOfWork):
        return  # a bare session (tests, tools): the periodic sealer or `telecare audit seal` picks it up
    uow = session

    async def nudge() -> None:
        await sealer_for(uow.db).nudge()

    uow.after_commit_once("audit.seal", nudge)


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
    """Append one entry in the caller's transaction (the key defaults to the unit of work's). In a
    read-only unit of work the entry is written by the audit trail's group commit once the reads are done,
    before the unit of work returns (audit/writer.py): the answer never leaves without it."""
    entry = AuditEntry(
        id=None,
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
        prev_mac=UNCHAINED,
        mac="",
    )
    if _defer(session, [entry]):
        return entry
    if key is None:
        key = as_uow(session).audit_key
    # The id is assigned before the insert so that the MAC can cover it (the table rejects UPDATE).
    (entry.id,) = await _entry_ids(session, 1)
    entry.mac = compute_mac(key, entry)
    session.add(entry)
    session.add(AuditPending(entry_id=entry.id))
    await session.flush()
    _nudge_sealer(session)
    return entry


def _defer(session: AsyncSession, entries: list[AuditEntry]) -> bool:
    """Queue `entries` for the group commit if `session` is a read-only unit of work."""
    if not (isinstance(session, UnitOfWork) and session.read_only):
        return False
    uow = session
    uow.audit_drafts.extend(entries)

    async def write(done: UnitOfWork) -> None:
        drafts, done.audit_drafts = done.audit_drafts, []
        await writer_for(done.db).write(drafts)

    uow.after_commit_required("audit.write", write)
    return True


async def store_entries(session: AsyncSession, entries: list[AuditEntry], *, key: bytes) -> None:
    """Give `entries` (built without id or MAC) their ids and MACs and add them, queued for sealing, in the
    caller's transaction (the group commit's)."""
    ids = await _entry_ids(session, len(entries))
    for entry, entry_id in zip(entries, ids, strict=True):
        entry.id = entry_id
        entry.mac = compute_mac(key, entry)
    # Bulk INSERTs (executemany), not a unit-of-work flush: the entries stay plain objects, so a group
    # whose transaction fails can be written again.
    # Core inserts into the tables: the ORM's bulk path cost more than the statements themselves.
    table = cast(Table, AuditEntry.__table__)
    columns = [c.key for c in table.columns]
    await session.execute(insert(table), [{c: getattr(e, c) for c in columns} for e in entries])
    await session.execute(
        insert(cast(Table, AuditPending.__table__)), [{"entry_id": entry_id} for entry_id in ids]
    )
    _nudge_sealer(session)


@dataclass(frozen=True)
class EntrySpec:
    """One entry for `record_many`."""

    action: AuditAction | str
    resource_type: str
    resource_id: str | int | None = None
    patient_id: int | None = None
    org_id: int | None = None
    detail: dict[str, Any] | None = None


def writer_for(db: Database) -> AuditWriter:
    """The database's audit group commit (one per Database, like the ingest coalescer)."""
    return db.component(AuditWriter, lambda: AuditWriter(db, store_entries))


async def record_many(
    session: AsyncSession,
    actor: Actor,
    specs: list[EntrySpec],
    *,
    key: bytes,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    purpose: Purpose | str = Purpose.TREATMENT,
) -> None:
    """Append several entries in one flush (bulk ingestion audits each patient)."""
    if not specs:
        return
    now = utc_now()
    entries: list[Any] = []
    for spec in specs:
        entry = AuditEntry(
            id=None,
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
            prev_mac=UNCHAINED,
            mac="",
        )
        entries.append(entry)
    if not _defer(session, entries):
        await store_entries(session, entries, key=key)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None  # the entry (or, for a broken seal chain, the entry of the seal) named
    reason: str | None = None
    head: tuple[int, str] | None = None  # (last seal's seq, its MAC): the anchor to keep outside the database
    unsealed: int = 0  # entries not yet sealed but within the window (counted in `checked`)


async def _seals(session: AsyncSession, batch: int) -> AsyncIterator[tuple[AuditSeal, AuditEntry | None]]:
    """Every seal in seq order (from the lowest present: seals planted below 1 are walked) with its entry."""
    last: int | None = None
    while True:
        stmt = (
            select(AuditSeal, AuditEntry)
            .outerjoin(AuditEntry, AuditEntry.id == AuditSeal.entry_id)
            .order_by(AuditSeal.seq)
            .limit(batch)
        )
        if last is not None:
            stmt = stmt.where(AuditSeal.seq > last)
        rows = (await session.execute(stmt)).all()
        if not rows:
            return
        for seal, entry in rows:
            yield seal, entry
        last = rows[-1][0].seq
        session.expunge_all()


async def _unsealed(session: AsyncSession, batch: int) -> AsyncIterator[AuditEntry]:
    """Every entry no seal names, in id order."""
    last: int | None = None
    while True:
        stmt = (
            select(AuditEntry)
            .outerjoin(AuditSeal, AuditSeal.entry_id == AuditEntry.id)
            .where(AuditSeal.seq.is_(None))
            .order_by(AuditEntry.id)
            .limit(batch)
        )
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
    session: AsyncSession,
    *,
    key: bytes,
    anchor: tuple[int, str] | None = None,
    seal_window: float = 5.0,
    now: datetime | None = None,
    batch: int = 5000,
) -> VerifyResult:
    """Walk the seal chain from the genesis, then every entry not yet sealed; name the first wrong thing.

    Sealed entries: each seal must follow the one before (seq, link, MAC) and its entry must exist with its
    MAC intact. Unsealed entries: their own MAC must hold, and none may be older than `seal_window`
    seconds (by the writers' clock, `entry.at`): the sealer is not running, or a seal was removed.
    The head row catches a deleted tail, but someone who deletes the tail *and* rewrites the head row leaves
    a valid, shorter chain. `anchor` is a (seq, MAC) pair printed by an earlier run and kept outside the
    database (docs/security.md#audit-trail: anchor the head hash); that seal must still be as it was."""
    prev_mac = GENESIS
    prev_seq = 0
    last_entry = 0
    checked = 0
    async for seal, entry in _seals(session, batch):
        checked += 1
        eid = seal.entry_id
        if seal.seq > prev_seq + 1:
            return VerifyResult(
                False,
                checked,
                eid,
                f"seal {prev_seq + 1} is missing: seal {seal.seq} (entry {eid}) follows {prev_seq}",
            )
        if seal.seq != prev_seq + 1:
            return VerifyResult(
                False,
                checked,
                eid,
                f"entry {eid} is out of sequence (seal {seal.seq}, expected {prev_seq + 1}): "
                "sealed outside Telecare",
            )
        if entry is None:
            return VerifyResult(False, checked, eid, f"entry {eid} is missing (sealed as {seal.seq})")
        if not constant_time_equal(entry.mac, compute_mac(key, entry)):
            return VerifyResult(False, checked, eid, f"entry {eid} was altered (MAC mismatch)")
        if not constant_time_equal(seal.prev_mac, prev_mac):
            return VerifyResult(
                False, checked, eid, f"entry {eid} does not link to the entry before it (seal {seal.seq})"
            )
        if not constant_time_equal(seal.mac, seal_mac(key, seal, entry.mac)):
            return VerifyResult(False, checked, eid, f"the seal of entry {eid} was altered (seal {seal.seq})")
        if anchor is not None and seal.seq == anchor[0] and not constant_time_equal(seal.mac, anchor[1]):
            return VerifyResult(
                False, checked, eid, f"seal {seal.seq} differs from the anchor: the chain was rewritten"
            )
        prev_mac, prev_seq, last_entry = seal.mac, seal.seq, eid
    if anchor is not None and anchor[0] > prev_seq:
        return VerifyResult(
            False,
            checked,
            anchor[0],
            f"anchored seal {anchor[0]} is gone: the chain ends at seal {prev_seq}",
        )
    head = (await session.execute(select(AuditChainHead).where(AuditChainHead.id == 1))).scalar_one_or_none()
    head_seq, head_mac = (head.last_seq, head.last_mac) if head else (0, GENESIS)
    if head_seq != prev_seq or not constant_time_equal(head_mac, prev_mac):
        return VerifyResult(
            False,
            checked,
            last_entry,
            f"chain head names seal {head_seq} but the chain ends at seal {prev_seq} (entry {last_entry}): "
            "entries were deleted or sealed outside Telecare",
        )
    cutoff = (now or utc_now()) - timedelta(seconds=seal_window)
    unsealed = 0
    async for entry in _unsealed(session, batch):
        checked += 1
        unsealed += 1
        if not constant_time_equal(entry.mac, compute_mac(key, entry)):
            return VerifyResult(
                False, checked, entry.id, f"entry {entry.id} was altered (MAC mismatch, unsealed)"
            )
        if entry.at < cutoff:
            return VerifyResult(
                False,
                checked,
                entry.id,
                f"entry {entry.id} is not sealed {seal_window:g} s after it was written "
                f"(at {entry.at.isoformat()}): "
                "the sealer is not running, or its seal was removed",
            )
    return VerifyResult(True, checked, head=(prev_seq, prev_mac), unsealed=unsealed)
