"""The typed unit of work (core/db.py): commit and rollback, after-commit callbacks, independent writes
after a rollback, events and per-process components."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from telecare.core.db import Database, UnitOfWork, as_uow
from telecare.core.events import EventBus
from telecare.identity.models import Organization


async def _orgs(db: Database) -> int:
    async with db.unit_of_work() as uow:
        return int(await uow.scalar(select(func.count(Organization.id))) or 0)


async def test_a_unit_of_work_commits_and_then_runs_after_commit_callbacks(db: Database) -> None:
    seen: list[int] = []
    async with db.unit_of_work() as uow:
        assert isinstance(uow, UnitOfWork)
        assert uow.settings is db.settings
        assert uow.audit_key == db.settings.secret("audit_hmac_key").encode()
        uow.add(Organization(name="Committed", slug="committed"))

        async def after() -> None:
            seen.append(await _orgs(db))

        uow.after_commit(after)
        assert seen == []
    assert seen == [1]


async def test_a_rolled_back_unit_of_work_runs_no_callback_but_its_independent_writes(db: Database) -> None:
    seen: list[str] = []

    async def independent(uow: UnitOfWork) -> None:
        uow.add(Organization(name="Survives", slug="survives"))

    async def after() -> None:
        seen.append("after-commit")

    async def failing_action() -> None:
        async with db.unit_of_work() as uow:
            uow.add(Organization(name="Rolled back", slug="rolled-back"))
            uow.after_commit(after)
            uow.after_rollback(independent)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await failing_action()
    assert seen == []
    async with db.unit_of_work() as uow:
        slugs = set((await uow.execute(select(Organization.slug))).scalars())
    assert slugs == {"survives"}


async def test_published_events_leave_only_after_commit(db: Database) -> None:
    bus = EventBus(db)
    db.events = bus
    await bus.start()

    async def failing_action() -> None:
        async with db.unit_of_work() as uow:
            uow.publish("t", {"n": 1})
            raise RuntimeError("rolled back")

    try:
        async with bus.subscribe("t") as queue:
            with pytest.raises(RuntimeError):
                await failing_action()
            async with db.unit_of_work() as uow:
                uow.publish("t", {"n": 2})
                assert queue.empty()
            # Via LISTEN/NOTIFY on PostgreSQL: the rolled-back event never comes; the committed one does.
            assert await asyncio.wait_for(queue.get(), timeout=5) == {"n": 2}
            assert queue.empty()
    finally:
        await bus.stop()


async def test_components_are_one_per_database(db: Database) -> None:
    made: list[Any] = []

    class Thing:
        def __init__(self) -> None:
            made.append(self)

    async with db.unit_of_work() as one:
        first = one.component(Thing, Thing)
    async with db.unit_of_work() as two:
        assert two.component(Thing, Thing) is first
    assert len(made) == 1


def test_as_uow_refuses_a_foreign_session() -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    with pytest.raises(TypeError):
        as_uow(AsyncSession())


async def test_on_rollback_callbacks_run_only_when_the_work_fails_before_its_commit(db: Database) -> None:
    """Undo of side effects made before the commit (a stored blob, docs/files.md#orphans)."""
    seen: list[str] = []

    def undo(tag: str) -> Any:
        async def callback() -> None:
            seen.append(tag)

        return callback

    async def failing() -> None:
        raise AssertionError("an on-rollback failure is logged, not raised")

    async def action(*, slug: str, tag: str, fail: bool) -> None:
        async with db.unit_of_work() as uow:
            uow.add(Organization(name=tag, slug=slug))
            uow.on_rollback(undo(tag))
            uow.on_rollback(failing)
            if fail:
                raise RuntimeError("the action failed")

    await action(slug="kept", tag="committed", fail=False)
    assert seen == []
    with pytest.raises(RuntimeError, match="the action failed"):
        await action(slug="other", tag="raised", fail=True)
    assert seen == ["raised"]
    # A failed commit may have committed after all (a lost answer): its side effects stay, for the sweep.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await action(slug="kept", tag="commit failed", fail=False)  # the commit's flush fails
    assert seen == ["raised"]
