"""Background jobs that run once however many workers or hosts serve (docs/performance.md#background-jobs).

Every worker runs the same loops (the monitoring sweep, the visits tick, the audit sealer). A job's
transaction first claims the job's name: on PostgreSQL with a transaction-scoped advisory lock, taken
without waiting, so a second worker whose tick comes while the first is still at it skips that round
instead of doing the same work again; the lock goes with the first worker's commit, and the next tick, on
whichever worker, starts from what it committed. On SQLite every writing transaction is BEGIN IMMEDIATE:
the only writer of the file, in this process or any other, so the claim always succeeds.

Jobs stay idempotent by their data as well (an escalated alert has `escalated_at`; a reminder row is
unique per appointment and offset; no-show marking locks its rows): the claim is what keeps two workers
from both doing a round's work, the data is what makes a repeated round harmless."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a job name (the same on every worker and host)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


async def claim(session: AsyncSession, name: str) -> bool:
    """Whether this transaction may run job `name` now (false: another worker is running it)."""
    bind = session.bind
    if bind is None or bind.dialect.name != "postgresql":
        return True
    got = (await session.execute(select(func.pg_try_advisory_xact_lock(lock_key(name))))).scalar_one()
    return bool(got)
