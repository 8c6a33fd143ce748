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
`exempt(uow, reason)`.

The account is settled when the outermost transaction has committed (after the flush `commit()` does
itself, so rows added without an explicit flush count). Releasing a savepoint keeps its changes and
entries; rolling one back restores the account as it was when the savepoint began. Statements run on a
connection taken from the session (`session.connection().execute(...)`, `exec_driver_sql`) and the legacy
`Session.bulk_*` methods are not seen: Telecare's code runs every statement through the session. A statement
is accounted by what it changed: an `INSERT ... ON CONFLICT DO NOTHING` that met only duplicates, or an
UPDATE matching no row, needs no entry; one that changed rows needs an entry for every patient its
parameters, `.values()` or WHERE clause name (for all of them, even if only some rows were new)."""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CursorResult, Result, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter

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
_WRITE_SQL = re.compile(
    r"^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM|REPLACE\s+INTO)\s+\"?(\w+)\"?",
    re.IGNORECASE,
)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)


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
        self._savepoints: dict[int, _State] = {}  # id(nested SessionTransaction) -> account at its start
        self._exempt: weakref.WeakKeyDictionary[Session, str] = weakref.WeakKeyDictionary()
        self._tables: frozenset[str] | None = None
        self._known = 0
        self.installed = False

    # ---- wiring -----------------------------------------------------------------------------------------

    _HOOKS = (
        ("after_flush", "_after_flush"),
        ("do_orm_execute", "_on_execute"),
        ("after_commit", "_after_commit"),
        ("after_rollback", "_after_rollback"),
        ("after_transaction_create", "_begin_transaction"),
        ("after_transaction_end", "_end_transaction"),
    )

    def install(self) -> None:
        if self.installed:
            return
        for name, method in self._HOOKS:
            event.listen(Session, name, getattr(self, method))
        self.installed = True

    def uninstall(self) -> None:
        if not self.installed:
            return
        for name, method in self._HOOKS:
            event.remove(Session, name, getattr(self, method))
        self.installed = False

    def exempt(self, session: AsyncSession | Session, reason: str) -> None:
        """This unit of work writes without actions on purpose (test set-up data, the demo loader)."""
        if not reason.strip():
            raise ValueError("an exemption from the audit guard needs a reason")
        sync = session.sync_session if isinstance(session, AsyncSession) else session
        self._exempt[sync] = reason

    def take(self) -> list[Violation]:
        with self._lock:
            found, self.violations = self.violations, []
        return found

    # ---- bookkeeping ------------------------------------------------------------------------------------

    @property
    def tables(self) -> frozenset[str]:
        # Recomputed when more models are imported (a flush may come before every domain is installed).
        known = len(Base.metadata.tables)
        if self._tables is None or self._known != known:
            self._tables, self._known = patient_tables(), known
        return self._tables

    def _state(self, session: Session) -> _State:
        state = self._states.get(session)
        if state is None:
            state = self._states[session] = _State()
        return state

    def _touch(self, session: Session, table: str, patient_id: Any, how: str) -> None:
        pid = int(patient_id) if isinstance(patient_id, int) and not isinstance(patient_id, bool) else None
        self._state(session).touched.setdefault(pid, (table, how))

    def _after_flush(self, session: Session, _context: Any) -> None:
        # In after_flush, new/dirty/deleted still show what this flush wrote (and new rows have their ids).
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
                self._touch(session, table, pid, f"ORM {how} of {type(obj).__name__}")
            elif table in LINKED_PATIENT_TABLES:
                self._touch(session, table, None, f"ORM {how} of {type(obj).__name__}")

    def _on_execute(self, state: ORMExecuteState) -> Result[Any] | None:
        if state.is_select:
            return None
        statement = state.statement
        table: str | None = None
        if state.is_insert or state.is_update or state.is_delete:
            target = getattr(statement, "table", None)
            table = getattr(target, "name", None)
        else:
            match = _WRITE_SQL.match(_sql(statement))
            table = match.group(1) if match else None
        if table is None:
            return None
        if table == AUDIT_TABLE:  # a bulk insert of entries (audit/service.py store_entries)
            audit_state = self._state(state.session)
            audit_state.entries += 1
            audit_state.audited.update(_patient_ids(statement, state.parameters, "patient_id"))
            return None
        if table not in self.tables and table not in LINKED_PATIENT_TABLES:
            return None
        key = "id" if table == "patients" else "patient_id"
        pids = _patient_ids(statement, state.parameters, key)
        how = _describe(statement)
        # Run it here to see whether it changed anything: an INSERT ... ON CONFLICT DO NOTHING that met only
        # duplicates (a replayed upload, an alert already open) or an UPDATE matching no row changes no data.
        result = state.invoke_statement()
        affected = -1  # unknown (an ORM bulk insert without RETURNING): count it as a change
        if isinstance(result, CursorResult) and not result.returns_rows:
            affected = result.rowcount
        elif getattr(statement, "_returning", None) or _RETURNING.search(_sql(statement)):
            frozen = result.freeze()  # buffer the rows to count them; the caller gets the same rows
            affected = len(frozen.data)
            result = frozen()
        if affected != 0:
            if not pids or table in LINKED_PATIENT_TABLES:
                self._touch(state.session, table, None, how)
            for pid in pids:
                self._touch(state.session, table, pid, how)
        return result

    def _begin_transaction(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            self._savepoints[id(transaction)] = self._state(session).copy()

    def _after_rollback(self, session: Session) -> None:
        # Fired for the outermost transaction and for a savepoint; while a savepoint rolls back it is still
        # the session's innermost nested transaction.
        nested = session.get_nested_transaction()
        if nested is not None:
            snapshot = self._savepoints.get(id(nested))
            if snapshot is not None:
                self._states[session] = snapshot.copy()

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a savepoint released: its changes and entries stay in the transaction's account
        self._settle(session)

    def _end_transaction(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            self._savepoints.pop(id(transaction), None)
        elif transaction.parent is None:
            self._states.pop(session, None)  # committed (settled), rolled back or closed: start afresh

    def _settle(self, session: Session) -> None:
        state = self._states.pop(session, None)
        if state is None or session in self._exempt:
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


def _sql(statement: Any) -> str:
    try:
        return str(statement)
    except Exception:  # a statement that only compiles on its own dialect
        return type(statement).__name__


def _describe(statement: Any) -> str:
    return "statement " + (" ".join(_sql(statement).split("(")[0].split())[:60] or "?")


def _add(pids: set[Any], value: Any) -> None:
    value = getattr(value, "value", value)  # a bound parameter
    if isinstance(value, list | tuple):
        pids.update(v for v in value if v is not None)
    elif value is not None:
        pids.add(value)


def _patient_ids(statement: Any, parameters: Any, key: str) -> set[Any]:
    """The patients a DML statement names: in its parameters (one row or executemany), in `.values(...)`,
    or in its WHERE clause (`column == value`, `column IN (...)`). Empty when it names none."""
    pids: set[Any] = set()
    rows = parameters if isinstance(parameters, list | tuple) else [parameters] if parameters else []
    for row in rows:
        if isinstance(row, dict) and key in row:
            _add(pids, row[key])
    values = getattr(statement, "_values", None) or {}
    multi = getattr(statement, "_multi_values", None) or ()
    for mapping in (values, *(row for batch in multi for row in batch)):
        for column, value in mapping.items() if isinstance(mapping, dict) else ():
            if getattr(column, "name", column) == key:
                _add(pids, value)
    for criterion in getattr(statement, "_where_criteria", ()) or ():
        for node in visitors.iterate(criterion):
            if isinstance(node, BinaryExpression) and getattr(node.left, "name", None) == key:
                if node.operator in (operators.eq, operators.in_op):
                    right = node.right
                    if isinstance(right, BindParameter):
                        _add(pids, right.effective_value)
                    else:
                        for sub in visitors.iterate(right):
                            if isinstance(sub, BindParameter):
                                _add(pids, sub.effective_value)
    return pids


GUARD = AuditGuard()
