"""The sealer: links written entries into the HMAC chain off the requests' path (docs/audit.md).

One `Sealer` per process and database (a `Database` component). In a long-running server it is a background
task woken by every unit of work that wrote entries (after its commit) and every
`audit_seal_interval_seconds` regardless, each run sealing everything pending in batches; the app lifespan
starts it (`background_loop`) and stopping it seals what is left. Elsewhere (a CLI command, a test's
database) `nudge()` seals at once, after the commit. Exactly one sealer runs at a time across workers and
hosts: `seal_batch` takes a PostgreSQL advisory lock in its transaction, and SQLite has one
writer at a time anyway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit.models import AuditChainHead, AuditEntry, AuditPending, AuditSeal
from telecare.core.crypto import hmac_sha256
from telecare.core.db import Database
from telecare.core.time import utc_now

log = logging.getLogger(__name__)

GENESIS = "0" * 64
# pg_advisory_xact_lock key of the sealing transaction: one sealer at a time across every worker and host.
SEALER_LOCK = 0x7E1EC4AE


def seal_mac(key: bytes, seal: AuditSeal, entry_mac: str) -> str:
    fields: list[Any] = [
        seal.seq,
        seal.entry_id,
        entry_mac,
        seal.sealed_at.isoformat(timespec="microseconds"),
        seal.prev_mac,
    ]
    return hmac_sha256(key, json.dumps(fields, separators=(",", ":")).encode())


def _dialect(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else "sqlite"


async def seal_batch(
    session: AsyncSession, *, key: bytes, limit: int = 1000, wait: bool = True
) -> int | None:
    """Seal up to `limit` pending entries in the caller's transaction, in entry-id order; the number sealed,
    or None when another sealer holds the lock and `wait` is false.

    PostgreSQL: the transaction-scoped advisory lock makes this the only sealer across every worker and
    host until it commits; the head row is also read FOR UPDATE. SQLite: the transaction is BEGIN IMMEDIATE,
    so it is the only writer of the database, in this process or any other."""
    if _dialect(session) == "postgresql":
        if wait:
            await session.execute(select(func.pg_advisory_xact_lock(SEALER_LOCK)))
        elif not (await session.execute(select(func.pg_try_advisory_xact_lock(SEALER_LOCK)))).scalar_one():
            return None
    stmt = select(AuditChainHead).where(AuditChainHead.id == 1)
    if _dialect(session) == "postgresql":
        stmt = stmt.with_for_update()
    head = (await session.execute(stmt)).scalar_one_or_none()
    rows = (
        await session.execute(
            select(AuditPending.entry_id, AuditEntry.mac)
            .outerjoin(AuditEntry, AuditEntry.id == AuditPending.entry_id)
            .order_by(AuditPending.entry_id)
            .limit(limit)
        )
    ).all()
    if not rows:
        return 0
    if head is None:
        head = AuditChainHead(id=1, last_seq=0, last_mac=GENESIS)
        session.add(head)
    now = utc_now()
    seals = []
    for entry_id, entry_mac in rows:
        if entry_mac is None:
            # Queued but gone: deleted before its seal. Sealed with no entry MAC, so `verify` names it.
            log.error("audit entry %s was queued for sealing but is missing", entry_id)
        seal = AuditSeal(
            seq=head.last_seq + 1, entry_id=entry_id, sealed_at=now, prev_mac=head.last_mac, mac=""
        )
        seal.mac = seal_mac(key, seal, entry_mac or "")
        seals.append(seal)
        head.last_seq, head.last_mac = seal.seq, seal.mac
    session.add_all(seals)
    await session.flush()
    await session.execute(delete(AuditPending).where(AuditPending.entry_id.in_([r[0] for r in rows])))
    return len(rows)


BATCH = 1000
# After a wake-up the background sealer waits this long before sealing, so that one sealing transaction
# serves every request of the interval instead of one each (bounded well below the verify window).
COALESCE_SECONDS = 0.1


async def seal_pending(db: Database, *, batch: int = BATCH, wait: bool = True) -> int:
    """Seal every pending entry, one transaction per batch; the number sealed. With `wait` false, give way
    (return at once) when another sealer holds the PostgreSQL lock."""
    total = 0
    while True:
        async with db.unit_of_work() as session:
            sealed = await seal_batch(session, key=db.audit_key, limit=batch, wait=wait)
        if sealed is None:
            return total
        total += sealed
        if sealed < batch:
            return total


class Sealer:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.runs = 0  # sealing runs (tests and benchmarks)

    async def nudge(self) -> None:
        """Entries were committed: seal them now (inline) or wake the background task."""
        if not self.db.seal_in_background:
            await seal_pending(self.db)
            return
        self.start()
        self._wake.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-sealer")

    async def _run(self) -> None:
        interval = self.db.settings.audit_seal_interval_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            try:
                await seal_pending(self.db)
                self.runs += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                # The entries stay pending (committed, with their own MACs): the next run seals them.
                log.exception("audit sealing failed")
                await asyncio.sleep(min(interval, 1.0))

    async def stop(self) -> None:
        """Stop the task and seal what is left (a clean shutdown leaves nothing pending)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        try:
            await seal_pending(self.db)
        except Exception:
            log.exception("final audit sealing failed: the next sealer run seals the pending entries")


def sealer_for(db: Database) -> Sealer:
    return db.component(Sealer, lambda: Sealer(db))


async def background_loop(app: Any) -> None:
    """Started by the app lifespan: the periodic sealer (also sealing what an earlier process left pending,
    e.g. after a crash between an entry's commit and its seal)."""
    db: Database = app.state.db
    if not db.seal_in_background:
        await asyncio.Event().wait()  # every unit of work seals after its commit (the test app)
    sealer = sealer_for(db)
    sealer.start()
    sealer._wake.set()  # seal at once whatever a previous process left
    try:
        await asyncio.Event().wait()
    finally:
        await sealer.stop()
