"""A guard that no change to patient data commits without an audit entry in the same transaction.

Installed for the whole test suite (tests/conftest.py), it watches every SQLAlchemy session of the process:
ORM flushes (rows added, changed or deleted) and statements run through a session (`insert(...)`,
`update(...)`, the PostgreSQL `INSERT ... SELECT unnest(...)` text of the monitoring batch door). When a
transaction commits, every patient whose row it changed must be named by an audit entry added in that same
transaction; a change to a patient-data table whose patient is not known from the row (visit events,
addenda, alert links) needs at least one audit entry. A savepoint that rolls back takes its changes and its
entries out of the account.

A violation is recorded (table, patient id, statement) rather than raised inside the commit; the test
harness fails the test that caused it. Units of work that set up test data on purpose say so with
`exempt(uow, reason)`."""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from telecare.core.db import Base

AUDIT_TABLE = "audit_entries"
# Tables that hold patient data but whose rows do not name the patient: a change needs some audit entry.
LINKED_PATIENT_TABLES = frozenset(
    {
        "appointment_reminders",
        "visit_participants",
        "visit_events",
        "visit_note_addenda",
        "billing_adjustments",
        "rpm_alert_readings",
    }
)
# Tables with a patient_id that are not the patient's health data, with the reason.
EXEMPT_TABLES: dict[str, str] = {
    AUDIT_TABLE: "the audit trail itself",
}
_WRITE_SQL = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)


def patient_tables() -> frozenset[str]:
    """Every mapped table with a patient_id column, and patients itself."""
    names = {
        table.name
        for table in Base.metadata.tables.values()
        if "patient_id" in table.columns or table.name == "patients"
    }
    return frozenset(names - set(EXEMPT_TABLES))


@dataclass
class Violation:
    table: str
    patient_id: int | None
    detail: str

    def __str__(self) -> str:
        who = f"patient {self.patient_id}" if self.patient_id is not None else "a patient"
        return f"{self.table}: change to {who}'s data committed without an audit entry ({self.detail})"


@dataclass
class _State:
    touched: dict[int | None, tuple[str, str]] = field(default_factory=dict)  # patient -> (table, how)
    audited: set[int | None] = field(default_factory=set)
    entries: int = 0

    def copy(self) -> _State:
        return _State(dict(self.touched), set(self.audited), self.entries)


class AuditGuard:
    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self._lock = threading.Lock()
        self._states: weakref.WeakKeyDictionary[Session, _State] = weakref.WeakKeyDictionary()
        self._savepoints: dict[int, _State] = {}
        self._exempt: weakref.WeakKeyDictionary[Session, str] = weakref.WeakKeyDictionary()
        self._tables: frozenset[str] | None = None
        self.installed = False

    # ---- wiring -----------------------------------------------------------------------------------------

    def install(self) -> None:
        if self.installed:
            return
        event.listen(Session, "after_flush", self._after_flush)
        event.listen(Session, "do_orm_execute", self._on_execute)
        event.listen(Session, "before_commit", self._before_commit)
        event.listen(Session, "after_commit", self._reset)
        event.listen(Session, "after_rollback", self._reset)
        event.listen(Session, "after_transaction_create", self._begin_savepoint)
        event.listen(Session, "after_soft_rollback", self._rollback_savepoint)
        self.installed = True

    def uninstall(self) -> None:
        if not self.installed:
            return
        event.remove(Session, "after_flush", self._after_flush)
        event.remove(Session, "do_orm_execute", self._on_execute)
        event.remove(Session, "before_commit", self._before_commit)
        event.remove(Session, "after_commit", self._reset)
        event.remove(Session, "after_rollback", self._reset)
        event.remove(Session, "after_transaction_create", self._begin_savepoint)
        event.remove(Session, "after_soft_rollback", self._rollback_savepoint)
        self.installed = False

    def exempt(self, session: AsyncSession | Session, reason: str) -> None:
        """This unit of work writes without actions on purpose (test set-up data, the demo loader)."""
        sync = session.sync_session if isinstance(session, AsyncSession) else session
        self._exempt[sync] = reason

    def take(self) -> list[Violation]:
        with self._lock:
            found, self.violations = self.violations, []
        return found

    # ---- bookkeeping ------------------------------------------------------------------------------------

    @property
    def tables(self) -> frozenset[str]:
        if self._tables is None:
            self._tables = patient_tables()
        return self._tables

    def _state(self, session: Session) -> _State:
        state = self._states.get(session)
        if state is None:
            state = self._states[session] = _State()
        return state

    def _touch(self, session: Session, table: str, patient_id: Any, how: str) -> None:
        pid = int(patient_id) if isinstance(patient_id, int) else None
        self._state(session).touched.setdefault(pid, (table, how))

    def _after_flush(self, session: Session, _context: Any) -> None:
        for obj, how in (
            *((o, "insert") for o in session.new),
            *((o, "update") for o in session.dirty if session.is_modified(o, include_collections=False)),
            *((o, "delete") for o in session.deleted),
        ):
            table = getattr(getattr(obj, "__table__", None), "name", None)
            if table is None:
                continue
            if table == AUDIT_TABLE:
                if how == "insert":
                    state = self._state(session)
                    state.entries += 1
                    state.audited.add(getattr(obj, "patient_id", None))
                continue
            if table in self.tables:
                pid = obj.id if table == "patients" else getattr(obj, "patient_id", None)
                self._touch(session, table, pid, how)
            elif table in LINKED_PATIENT_TABLES:
                self._touch(session, table, None, how)

    def _on_execute(self, state: ORMExecuteState) -> None:
        if state.is_select:
            return
        statement = state.statement
        table: str | None = None
        if state.is_insert or state.is_update or state.is_delete:
            target = getattr(statement, "table", None)
            table = getattr(target, "name", None)
        else:
            match = _WRITE_SQL.match(str(statement))
            table = match.group(1) if match else None
        if table is None or table == AUDIT_TABLE:
            if table == AUDIT_TABLE:
                self._state(state.session).entries += 1
            return
        if table not in self.tables and table not in LINKED_PATIENT_TABLES:
            return
        pids: set[Any] = set()
        params = state.parameters
        rows = params if isinstance(params, list) else [params] if params else []
        for row in rows:
            value = row.get("patient_id") if isinstance(row, dict) else None
            if isinstance(value, list | tuple):
                pids.update(value)
            elif value is not None:
                pids.add(value)
        values = getattr(statement, "_multi_values", None) or ()
        for batch in values:
            for row in batch:
                for key, value in (row.items() if isinstance(row, dict) else ()):
                    if getattr(key, "name", key) == "patient_id":
                        pids.add(getattr(value, "value", value))
        how = "statement " + (str(statement).split("(")[0].strip()[:60] or "?")
        if not pids or table in LINKED_PATIENT_TABLES:
            self._touch(state.session, table, None, how)
        for pid in pids:
            self._touch(state.session, table, pid, how)

    def _begin_savepoint(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            self._savepoints[id(transaction)] = self._state(session).copy()

    def _rollback_savepoint(self, session: Session, previous: SessionTransaction) -> None:
        snapshot = self._savepoints.pop(id(previous), None)
        if previous.nested and snapshot is not None:
            self._states[session] = snapshot

    def _before_commit(self, session: Session) -> None:
        state = self._states.get(session)
        if state is None or session in self._exempt or session.in_nested_transaction():
            return
        found = []
        for pid, (table, how) in state.touched.items():
            if pid is None:
                if state.entries == 0:
                    found.append(Violation(table, None, how))
            elif pid not in state.audited:
                found.append(Violation(table, pid, how))
        if found:
            with self._lock:
                self.violations.extend(found)

    def _reset(self, session: Session) -> None:
        self._states.pop(session, None)


GUARD = AuditGuard()
