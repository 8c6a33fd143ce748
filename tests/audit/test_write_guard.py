"""The audit guard (telecare/audit/guard.py), active for the whole suite, fails a test whose transaction
commits a change to patient data without an audit entry. Sabotage checks: writes done behind an action's
back (an ORM add, a Core UPDATE, a bulk executemany, raw SQL, a write inside a savepoint) are caught;
the same changes made by an action, or audited in the same transaction, pass; a rolled-back savepoint
takes its changes (and its entries) out of the account."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, text, update

from telecare.audit import service as audit
from telecare.audit.guard import GUARD, Violation, patient_tables
from telecare.audit.models import AuditAction
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity import service as identity
from telecare.identity.models import Patient, Role
from telecare.identity.schemas import PatientUpdate
from telecare.monitoring.models import Reading, ReadingSource
from tests.factories import make_org, make_patient, make_user, setup_uow
from tests.visit_factories import principal_of

_n = iter(range(1, 10**6))


def _reading(org_id: int, patient_id: int) -> dict[str, Any]:
    n = next(_n)
    now = utc_now()
    return {
        "org_id": org_id,
        "patient_id": patient_id,
        "source": ReadingSource.MANUAL,
        "kind": "heart_rate",
        "code": "8867-4",
        "value": 70.0,
        "unit": "/min",
        "orig_value": 70.0,
        "orig_unit": "/min",
        "measured_at": now - timedelta(minutes=n),
        "utc_offset_minutes": 0,
        "received_at": now,
        "identity_hash": f"guard-test-{n:053d}",
    }


async def _world(db: Database) -> tuple[int, int, int]:
    org = await make_org(db)
    pid = await make_patient(db, org)
    other = await make_patient(db, org)
    assert isinstance(pid, int)
    assert isinstance(other, int)
    return org, pid, other


def _caught() -> list[Violation]:
    """The violations so far, taken so that the harness does not fail this (deliberate) test."""
    return GUARD.take()


async def _audit(uow: Any, patient_id: int | None) -> None:
    await audit.record(
        uow, audit.SYSTEM_ACTOR, action=AuditAction.UPDATE, resource_type="Patient", patient_id=patient_id
    )


def test_the_guard_is_installed_and_knows_the_patient_tables() -> None:
    assert GUARD.installed
    tables = patient_tables()
    assert {"patients", "readings", "appointments", "rpm_enrolments"} <= tables
    assert "audit_entries" not in tables
    from telecare.audit.guard import LINKED_PATIENT_TABLES
    from telecare.core.db import Base
    from telecare.domains import install

    install()
    assert LINKED_PATIENT_TABLES <= set(Base.metadata.tables), "a linked patient-data table was renamed"


async def test_a_raw_orm_add_committed_without_audit_is_caught(db: Database) -> None:
    org, pid, _ = await _world(db)
    assert _caught() == []
    async with db.unit_of_work() as uow:  # behind the actions' back: no flush, commit() flushes it
        uow.add(Reading(**_reading(org, pid)))
    found = _caught()
    assert [(v.table, v.patient_id) for v in found] == [("readings", pid)]
    assert "without an audit entry" in str(found[0])


async def test_a_core_update_of_a_patient_is_caught_and_an_entry_for_another_patient_does_not_cover_it(
    db: Database,
) -> None:
    _, pid, other = await _world(db)
    async with db.unit_of_work() as uow:
        await uow.execute(update(Patient).where(Patient.id == pid).values(phone="+1 555 000 0000"))
    assert [(v.table, v.patient_id) for v in _caught()] == [("patients", pid)]
    async with db.unit_of_work() as uow:
        await uow.execute(update(Patient).where(Patient.id == pid).values(phone="+1 555 000 0001"))
        await _audit(uow, other)
    assert [(v.table, v.patient_id) for v in _caught()] == [("patients", pid)]


async def test_bulk_and_raw_sql_writes_are_caught(db: Database) -> None:
    org, pid, other = await _world(db)
    async with db.unit_of_work() as uow:  # executemany, as the monitoring ingest does on SQLite
        await uow.execute(insert(Reading), [_reading(org, pid), _reading(org, other)])
    assert {(v.table, v.patient_id) for v in _caught()} == {("readings", pid), ("readings", other)}
    async with db.unit_of_work() as uow:
        await uow.execute(text("UPDATE patients SET city = 'Erie' WHERE id = :id"), {"id": pid})
    assert [v.table for v in _caught()] == ["patients"]


async def test_a_write_inside_a_released_savepoint_is_caught(db: Database) -> None:
    org, pid, _ = await _world(db)
    async with db.unit_of_work() as uow:
        async with uow.begin_nested():
            uow.add(Reading(**_reading(org, pid)))
    assert [(v.table, v.patient_id) for v in _caught()] == [("readings", pid)]


async def _undone(uow: Any, *rows: Reading, audit_for: int | None = None) -> None:
    """Write `rows` (and an entry for `audit_for`) in a savepoint that rolls back."""

    async def inside() -> None:
        async with uow.begin_nested():
            uow.add_all(rows)
            if audit_for is not None:
                await _audit(uow, audit_for)
            await uow.flush()
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await inside()


async def test_a_rolled_back_savepoint_leaves_neither_its_change_nor_its_entry(db: Database) -> None:
    org, pid, _ = await _world(db)
    async with db.unit_of_work() as uow:  # the change rolls back with its savepoint: nothing to audit
        await _undone(uow, Reading(**_reading(org, pid)))
    assert _caught() == []
    async with db.unit_of_work() as uow:  # the entry rolls back with its savepoint: the change is unaudited
        uow.add(Reading(**_reading(org, pid)))
        await _undone(uow, audit_for=pid)
    assert [(v.table, v.patient_id) for v in _caught()] == [("readings", pid)]


async def test_a_rolled_back_transaction_is_not_accounted(db: Database) -> None:
    org, pid, _ = await _world(db)

    async def failing() -> None:
        async with db.unit_of_work() as uow:
            uow.add(Reading(**_reading(org, pid)))
            await uow.flush()
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await failing()
    assert _caught() == []


async def test_audited_writes_and_actions_pass(db: Database) -> None:
    org, pid, other = await _world(db)
    async with db.unit_of_work() as uow:
        uow.add(Reading(**_reading(org, pid)))
        await uow.execute(update(Patient).where(Patient.id == other).values(city="Erie"))
        await _audit(uow, pid)
        async with uow.begin_nested():
            await _audit(uow, other)
    assert _caught() == []
    coordinator = await make_user(db, org, Role.COORDINATOR)
    async with db.unit_of_work() as uow:  # a real action: authorises, writes, audits
        await identity.update_patient(
            uow, principal_of(coordinator), patient_id=pid, data=PatientUpdate(city="Scranton")
        )
    assert _caught() == []


async def test_set_up_code_declares_itself_and_needs_a_reason(db: Database) -> None:
    org, pid, _ = await _world(db)
    async with setup_uow(db) as uow:
        uow.add(Reading(**_reading(org, pid)))
    assert _caught() == []
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError, match="reason"):
            GUARD.exempt(uow, " ")


async def test_a_statement_that_changes_nothing_needs_no_entry(db: Database) -> None:
    org, pid, _ = await _world(db)
    row = _reading(org, pid)
    async with setup_uow(db) as uow:
        uow.add(Reading(**row))
    table = cast(Table, Reading.__table__)
    async with db.unit_of_work() as uow:  # a replay: ON CONFLICT DO NOTHING meets only the duplicate
        dialect = uow.db.engine.dialect.name
        from sqlalchemy.dialects import postgresql, sqlite

        stmt = (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)).values(**row)
        result = await uow.execute(
            stmt.on_conflict_do_nothing(index_elements=["identity_hash"]).returning(table.c.id)
        )
        assert result.all() == []
        await uow.execute(update(Patient).where(Patient.id == -1).values(city="Nowhere"))
    assert _caught() == []
    async with db.unit_of_work() as uow:  # the same statement for a new reading changes data: caught
        new = _reading(org, pid)
        result = await uow.execute(
            stmt.values(**new).on_conflict_do_nothing(index_elements=["identity_hash"]).returning(table.c.id)
        )
        assert len(result.all()) == 1
    assert [(v.table, v.patient_id) for v in _caught()] == [("readings", pid)]


async def test_the_demo_loader_declares_itself_and_is_audited_once_as_a_system_import(db: Database) -> None:
    from sqlalchemy import func, select

    from telecare.audit.models import AuditEntry
    from telecare.identity import demo
    from telecare.monitoring import demo as monitoring_demo

    async with db.unit_of_work() as uow:  # as `telecare demo` does
        lines = await demo.load(uow, db.settings)
        assert await monitoring_demo.load(uow, db.settings, demo.DEMO_SLUG) > 0
    assert lines is not None
    assert lines[0].startswith("demo organization loaded")
    assert _caught() == []
    async with db.unit_of_work() as uow:
        entries = (
            await uow.execute(select(AuditEntry.detail).where(AuditEntry.actor_kind == "system"))
        ).all()
        patients = await uow.scalar(select(func.count(Patient.id)))
    assert patients == 50
    assert [d for (d,) in entries if d.get("via") == "demo_import"] == [
        {"demo": True, "patients": 50, "via": "demo_import"}
    ]


async def test_an_action_sabotaged_to_skip_its_audit_is_caught(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same action twice: as written it passes; with its audit call removed, the guard names the
    patient it created."""
    from datetime import date

    from telecare.access import service as access
    from telecare.identity.models import Sex
    from telecare.identity.schemas import PatientCreate

    org = await make_org(db)
    coordinator = await make_user(db, org, Role.COORDINATOR)

    def data(mrn: str) -> PatientCreate:
        return PatientCreate(
            mrn=mrn,
            given_name="Ada",
            family_name="Byron",
            birth_date=date(1980, 1, 1),
            sex=Sex.FEMALE,
            state="PA",
        )

    async with db.unit_of_work() as uow:
        await identity.create_patient(uow, principal_of(coordinator), data=data("GUARD1"))
    assert _caught() == []

    async def skipped(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(access, "record_access", skipped)
    async with db.unit_of_work() as uow:
        patient = await identity.create_patient(uow, principal_of(coordinator), data=data("GUARD2"))
    assert [(v.table, v.patient_id) for v in _caught()] == [("patients", patient.id)]
