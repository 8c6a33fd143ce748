"""The sealer (audit/sealer.py, docs/audit.md): entries are written unchained in the request's transaction
and linked into the HMAC chain afterwards, by one sealer at a time. A crash between write and seal loses
nothing (the next run seals what is pending), an entry left unsealed beyond the window fails `verify`, and
concurrent sealers (workers, hosts) produce one chain."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit import service as audit
from telecare.audit.models import AuditChainHead, AuditEntry, AuditPending, AuditSeal
from telecare.audit.sealer import seal_pending, sealer_for
from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import advance_clock
from telecare.identity.models import Role
from tests.audit.test_tamper import _drop_triggers
from tests.conftest import make_settings
from tests.factories import add_to_care_team, bearer, make_org, make_patient, make_user, token_for

ACTOR = audit.Actor(user_id=7, org_id=None, role="nurse", kind="token", client_addr="::1")


async def _write_unsealed(db: Database, n: int, *, many: bool = False) -> list[int]:
    """Commit `n` entries as a request would, but with no sealer after the commit: the process 'crashed'
    between the entries' commit and their seal. Returns their ids."""
    async with db.engine.connect() as conn, AsyncSession(bind=conn) as session, session.begin():
        if many:
            specs = [audit.EntrySpec("read", "Patient", resource_id=i, patient_id=i) for i in range(n)]
            await audit.record_many(session, ACTOR, specs, key=db.audit_key)
            top = select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(n)
            ids = sorted((await session.execute(top)).scalars())
        else:
            ids = []
            for i in range(n):
                entry = await audit.record(
                    session, ACTOR, key=db.audit_key, action="read", resource_type="Patient", patient_id=i
                )
                ids.append(entry.id)
    return ids


async def _verify(db: Database, **kwargs: Any) -> audit.VerifyResult:
    async with db.unit_of_work() as s:
        return await audit.verify_chain(s, key=db.audit_key, **kwargs)


async def _counts(db: Database) -> tuple[int, int, int]:
    async with db.engine.connect() as conn:
        entries = (await conn.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
        seals = (await conn.execute(select(func.count()).select_from(AuditSeal))).scalar_one()
        pending = (await conn.execute(select(func.count()).select_from(AuditPending))).scalar_one()
    return entries, seals, pending


async def test_an_action_seals_its_entry_after_commit(db: Database) -> None:
    org = await make_org(db)
    await make_user(db, org, Role.NURSE)
    entries, seals, pending = await _counts(db)
    assert entries > 0
    assert (seals, pending) == (entries, 0)
    result = await _verify(db)
    assert result.ok, result.reason
    assert result.head is not None
    assert result.head[0] == seals
    assert result.unsealed == 0


async def test_crash_between_write_and_seal_then_the_next_run_seals_them(db: Database) -> None:
    ids = await _write_unsealed(db, 5) + await _write_unsealed(db, 4, many=True)
    assert await _counts(db) == (9, 0, 9)
    # Within the window the unsealed entries are checked (their own MACs) and counted, not failed.
    fresh = await _verify(db)
    assert fresh.ok, fresh.reason
    assert (fresh.checked, fresh.unsealed) == (9, 9)
    # Beyond it, the sealer is not doing its job: verify fails and names the oldest.
    late = await _verify(db, now=audit.utc_now() + timedelta(seconds=6))
    assert not late.ok
    assert late.first_bad_id == min(ids)
    assert "not sealed 5 s after" in (late.reason or "")
    # The next sealer run (the restarted server's first, or `telecare audit seal`) seals them in id order.
    assert await seal_pending(db, batch=4) == 9
    assert await _counts(db) == (9, 9, 0)
    advance_clock(timedelta(seconds=60))
    result = await _verify(db)
    assert result.ok, result.reason
    assert (result.checked, result.unsealed) == (9, 0)
    async with db.engine.connect() as conn:
        order = (await conn.execute(select(AuditSeal.entry_id).order_by(AuditSeal.seq))).scalars().all()
    assert list(order) == sorted(ids)
    assert await seal_pending(db) == 0  # idempotent


async def test_an_unsealed_entry_edited_is_caught_by_its_own_mac(db: Database) -> None:
    (entry_id,) = await _write_unsealed(db, 1)
    await _drop_triggers(db)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_entries SET patient_id = 999 WHERE id = :i"), {"i": entry_id})
    result = await _verify(db)
    assert not result.ok
    assert result.first_bad_id == entry_id
    assert "altered" in (result.reason or "")


async def test_an_entry_deleted_before_its_seal_is_named_once_sealed(db: Database) -> None:
    """A pending entry deleted, its queue row left: it is sealed as a gap, which verify names."""
    ids = await _write_unsealed(db, 3)
    await _drop_triggers(db)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_entries WHERE id = :i"), {"i": ids[1]})
    assert await seal_pending(db) == 3
    result = await _verify(db)
    assert not result.ok
    assert result.first_bad_id == ids[1]
    assert "missing" in (result.reason or "")


async def test_an_entry_whose_seal_is_removed_fails_after_the_window(db: Database) -> None:
    """Truncating the seal chain (seal and head rewritten) leaves the entry unsealed: once older than the
    window, verify reports it even without an anchor."""
    ids = await _write_unsealed(db, 3)
    await seal_pending(db)
    await _drop_triggers(db)
    async with db.engine.begin() as conn:
        previous = (await conn.execute(select(AuditSeal.mac).where(AuditSeal.seq == 2))).scalar_one()
        await conn.execute(text("DELETE FROM audit_seals WHERE seq = 3"))
        await conn.execute(
            AuditChainHead.__table__.update().values(last_seq=2, last_mac=previous)  # type: ignore[attr-defined]
        )
    assert (await _verify(db)).ok  # within the window: indistinguishable from an entry not sealed yet
    late = await _verify(db, now=audit.utc_now() + timedelta(seconds=6))
    assert not late.ok
    assert late.first_bad_id == ids[2]
    assert "not sealed" in (late.reason or "")


async def test_an_unsealed_entry_deleted_after_the_window_fails(db: Database) -> None:
    """An entry whose queue row was deleted (so it is never sealed), then the entry too once the window has
    passed: until the entry goes, verify fails on it; the seal chain names every entry it sealed."""
    ids = await _write_unsealed(db, 2)
    await _drop_triggers(db)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_pending WHERE entry_id = :i"), {"i": ids[0]})
    await seal_pending(db)  # seals only ids[1]
    late = await _verify(db, now=audit.utc_now() + timedelta(seconds=6))
    assert not late.ok
    assert late.first_bad_id == ids[0]
    assert "not sealed" in (late.reason or "")
    # Deleting a sealed entry, whenever, is caught by its seal.
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_entries WHERE id = :i"), {"i": ids[1]})
    result = await _verify(db, now=audit.utc_now() + timedelta(seconds=6))
    assert not result.ok
    assert result.first_bad_id in ids


async def test_concurrent_sealers_make_one_chain(db: Database, settings: Settings) -> None:
    """Four sealers (four engines, as four workers would have) race over the same pending entries in small
    batches: every entry is sealed exactly once, seqs 1..n with no gap or duplicate, and the chain verifies
    (PostgreSQL: the advisory lock; SQLite: BEGIN IMMEDIATE)."""
    ids = await _write_unsealed(db, 120, many=True)
    ids += await _write_unsealed(db, 30)
    dbs = [Database(settings) for _ in range(4)]
    try:
        counts = await asyncio.gather(*(seal_pending(d, batch=7) for d in dbs))
    finally:
        for d in dbs:
            await d.dispose()
    assert sum(counts) == len(ids)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(AuditSeal.seq, AuditSeal.entry_id).order_by(AuditSeal.seq))).all()
    assert [r[0] for r in rows] == list(range(1, len(ids) + 1))
    assert sorted(r[1] for r in rows) == sorted(ids)
    result = await _verify(db)
    assert result.ok, result.reason
    assert result.checked == len(ids)


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has one writer at a time whatever the chain does
async def test_concurrent_writers_need_no_chain_lock(db: Database) -> None:
    """Writers do not serialise on the chain: on PostgreSQL two transactions each hold an unsealed entry
    uncommitted at the same time (before the sealer, the second waited on the head row's lock)."""
    async with db.engine.connect() as c1, db.engine.connect() as c2:
        s1, s2 = AsyncSession(bind=c1), AsyncSession(bind=c2)
        async with s1.begin(), s2.begin():
            await audit.record(s1, ACTOR, key=db.audit_key, action="read", resource_type="Patient")
            await asyncio.wait_for(
                audit.record(s2, ACTOR, key=db.audit_key, action="read", resource_type="Patient"), 5
            )
        await s1.close()
        await s2.close()
    await seal_pending(db)
    assert (await _verify(db)).ok


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_server_seals_in_the_background(settings: Settings, tmp_path: Any, db: Database) -> None:
    """A served request's entry is sealed by the background sealer shortly after commit; entries a crashed
    process left pending are sealed by the periodic run; stopping the app leaves nothing pending."""
    from telecare.app import create_app

    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    pid = await make_patient(db, org)
    assert isinstance(pid, int)
    assert doc.practitioner_id
    await add_to_care_team(db, patient_id=pid, practitioner_id=doc.practitioner_id, org_id=org)
    token = await token_for(db, doc)
    left = await _write_unsealed(db, 3)  # before this server: a crash left them
    app = create_app(make_settings(settings.database_url, tmp_path / "d2", audit_seal_interval_seconds=0.2))
    assert app.state.db.seal_in_background

    async def all_sealed() -> bool:
        return (await _counts(db))[2] == 0

    async with app.router.lifespan_context(app):
        await _until(all_sealed)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for _ in range(5):
                r = await client.get(f"/api/v1/patients/{pid}", headers=bearer(token))
                assert r.status_code == 200
        await _until(all_sealed)
        assert sealer_for(app.state.db).runs >= 1
        # Periodic: written behind the app's back (no nudge), sealed within the interval.
        left += await _write_unsealed(db, 2)
        await _until(all_sealed, timeout=3)
        await _write_unsealed(db, 1)
    assert (await _counts(db))[2] == 0  # stopping sealed the last one
    result = await _verify(db)
    assert result.ok, result.reason
    assert result.unsealed == 0
