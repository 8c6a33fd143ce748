"""The durability settings the crash test relies on are really in force on the app's own connections
(docs/security.md#database-durability)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from telecare.core.db import Database
from telecare.identity.models import Patient, Sex


async def test_every_pooled_connection_has_the_durability_settings(app: Any, backend: str) -> None:
    db: Database = app.state.db
    engine = db.engine

    async def settings_of_one_connection() -> dict[str, Any]:
        async with engine.connect() as conn:
            await asyncio.sleep(0.05)  # hold it so the others must open their own
            if backend == "sqlite":
                return {
                    name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                    for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
                }
            return {
                name: (await conn.exec_driver_sql(f"SHOW {name}")).scalar_one()
                for name in ("fsync", "synchronous_commit", "full_page_writes")
            }

    seen = await asyncio.gather(*(settings_of_one_connection() for _ in range(3)))
    if backend == "sqlite":
        # synchronous=2 is FULL: the WAL is synced on every commit, so an acknowledged write survives power
        # loss too, not only a process crash.
        expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30000}
    else:
        expected = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    assert seen == [expected] * 3


async def test_foreign_keys_are_enforced_through_the_unit_of_work(app: Any) -> None:
    db: Database = app.state.db
    orphan = Patient(
        org_id=987654,
        mrn="FK-1",
        given_name="A",
        family_name="B",
        birth_date=date(1970, 1, 1),
        sex=Sex.MALE,
        state="PA",
    )

    async def insert_orphan() -> None:
        async with db.unit_of_work() as s:
            s.add(orphan)
            await s.flush()

    with pytest.raises(IntegrityError):
        await insert_orphan()
