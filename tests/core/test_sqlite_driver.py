"""The SQLite driver that makes one thread hop per statement (core/sqlite_driver.py) must behave like the
stock one: same rows, row counts and errors, and no transaction left open on a pooled connection (a
writer left open would hold SQLite's one write lock). The same behaviour is asserted on PostgreSQL, whose
driver is untouched, so that the two backends keep agreeing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from telecare.core.db import Database
from tests.conftest import make_settings

pytestmark = pytest.mark.asyncio

CREATE = "CREATE TABLE tc_probe (id INTEGER PRIMARY KEY, v VARCHAR(20) UNIQUE)"


async def _table(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.execute(text(CREATE))


async def test_rows_counts_and_returning(db: Database) -> None:
    await _table(db)
    async with db.unit_of_work() as uow:
        await uow.execute(
            text("INSERT INTO tc_probe (id, v) VALUES (:id, :v)"),
            [{"id": i, "v": f"v{i}"} for i in range(1, 6)],
        )
        updated = await uow.execute(text("UPDATE tc_probe SET v = v || 'x' WHERE id > 3"))
        assert updated.rowcount == 2
        returned = await uow.execute(text("DELETE FROM tc_probe WHERE id = 5 RETURNING id, v"))
        assert [tuple(r) for r in returned] == [(5, "v5x")]
    async with db.unit_of_work(read_only=True) as uow:
        rows = (await uow.execute(text("SELECT id, v FROM tc_probe ORDER BY id"))).all()
        assert [tuple(r) for r in rows] == [(1, "v1"), (2, "v2"), (3, "v3"), (4, "v4x")]
        empty = await uow.execute(text("SELECT id FROM tc_probe WHERE id < 0"))
        assert list(empty.keys()) == ["id"]
        assert empty.all() == []


async def test_failed_writer_leaves_nothing_open(db: Database) -> None:
    """A constraint error mid-transaction: the error is SQLAlchemy's IntegrityError, the earlier insert of
    the same transaction is rolled back, and the next writer gets the database at once."""
    await _table(db)
    async with db.unit_of_work() as uow:
        await uow.execute(text("INSERT INTO tc_probe (id, v) VALUES (1, 'kept')"))

    async def clash() -> None:
        async with db.unit_of_work() as uow:
            await uow.execute(text("INSERT INTO tc_probe (id, v) VALUES (2, 'lost')"))
            await uow.execute(text("INSERT INTO tc_probe (id, v) VALUES (3, 'kept')"))

    with pytest.raises(IntegrityError):
        await clash()
    # Every pooled connection is used in turn; one with a transaction left open would block this writer.
    for i in range(4, 12):
        async with asyncio.timeout(5):
            async with db.unit_of_work() as uow:
                await uow.execute(
                    text("INSERT INTO tc_probe (id, v) VALUES (:id, :v)"), {"id": i, "v": f"n{i}"}
                )
    async with db.unit_of_work(read_only=True) as uow:
        values = (await uow.execute(text("SELECT v FROM tc_probe ORDER BY id"))).scalars().all()
    assert values[0] == "kept"
    assert "lost" not in values
    assert len(values) == 9


async def test_read_left_open_is_rolled_back(db: Database) -> None:
    """A read-only unit of work that fails after its first read returns its connection rolled back: a
    snapshot kept open would pin the WAL (SQLite) or hold a transaction (PostgreSQL) forever."""
    await _table(db)

    async def failing_page() -> None:
        async with db.unit_of_work(read_only=True) as uow:
            await uow.execute(text("SELECT count(*) FROM tc_probe"))
            raise RuntimeError("the page failed after reading")

    with pytest.raises(RuntimeError):
        await failing_page()
    async with db.unit_of_work() as uow:
        await uow.execute(text("INSERT INTO tc_probe (id, v) VALUES (1, 'after')"))
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.execute(text("SELECT v FROM tc_probe"))).scalar_one() == "after"


async def test_one_hop_per_statement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite only (PostgreSQL's driver has no thread to hop to): a read-only unit of work with one SELECT
    costs three hops to the connection's thread (BEGIN, the SELECT, COMMIT) and none for the pool's reset;
    the stock adapter made nine."""
    db = Database(make_settings(f"sqlite:///{tmp_path / 'hops.db'}", tmp_path / "data"))
    try:
        await _table(db)
        async with db.unit_of_work(read_only=True) as uow:  # a pooled connection, opened and configured
            await uow.execute(text("SELECT 1"))
        hops = 0
        real = aiosqlite.Connection._execute

        async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal hops
            hops += 1
            return await real(self, fn, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.execute(text("SELECT count(*) FROM tc_probe"))).scalar_one() == 0
        assert hops == 3
    finally:
        await db.dispose()
