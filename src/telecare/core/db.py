"""Engine, sessions and the unit of work. The only place that begins and commits transactions.

A unit of work is a *writer* (the default) or *read-only* (`unit_of_work(read_only=True)`: a GET request, a
socket's re-check). A read-only one may write nothing but audit entries, which it hands to the audit
trail's group commit once its reads are done (`after_commit_required`); any other write statement raises
`ReadOnlyViolation` before it reaches the database, on both databases.

SQLite (docs/performance.md#sqlite): WAL journal, foreign keys on, synchronous=FULL so an acknowledged
commit survives a process crash and power loss (docs/security.md#database-durability). Read-only units of
work run plain (deferred) transactions on their own pooled connections, concurrently with the writer.
Writers are handed the database one at a time, first come first served, by an in-process FIFO lock taken
before their BEGIN IMMEDIATE: SQLite's own busy handler (sleep and retry) is unfair and made the
multi-second tail; it now only arbitrates between processes (a CLI command beside the server). One writer at
a time is also what audit entry ids (MAX(id) + 1) and the sealer's chain rely on. PostgreSQL: defaults
(fsync on, synchronous_commit on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_only

from telecare.config import Settings
from telecare.core import sqlite_driver

if TYPE_CHECKING:
    from telecare.core.events import EventBus

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


AfterCommit = Callable[[], Awaitable[None]]
RequiredAfterCommit = Callable[["UnitOfWork"], Awaitable[None]]
AfterRollback = Callable[["UnitOfWork"], Awaitable[None]]
C = TypeVar("C")


class UnitOfWork(AsyncSession):
    """One transaction and everything it owns: the SQLAlchemy session (this object), the settings, the
    audit key, the event bus, the callbacks to run after commit and the independent writes to run after it
    ends (audit entries of denied accesses, which must persist although the request rolls back).

    Opened only by `Database.unit_of_work()` (one per request, job, socket step or CLI command); services
    receive it as their first argument and never commit. It subclasses `AsyncSession` rather than wrapping
    one so every query keeps SQLAlchemy's typing; nothing else is looked up through `session.info`."""

    db: Database
    read_only: bool
    # Audit entries of a read-only unit of work, written by the audit trail's group commit after its reads
    # (audit/service.py; typed loosely because core imports no domain).
    audit_drafts: list[Any]
    _after_commit: list[AfterCommit]
    _after_commit_keys: set[str]
    _required: dict[str, RequiredAfterCommit]
    _after_rollback: list[AfterRollback]
    _on_rollback: list[AfterCommit]

    @property
    def settings(self) -> Settings:
        return self.db.settings

    @property
    def audit_key(self) -> bytes:
        """The HMAC key of the audit chain (from settings, never from the database)."""
        return self.db.audit_key

    @property
    def events(self) -> EventBus | None:
        """The process's event bus (None in a process without one, e.g. a CLI command)."""
        return self.db.events

    @property
    def dialect_name(self) -> str:
        return "sqlite" if self.db.is_sqlite else "postgresql"

    def after_commit(self, callback: AfterCommit) -> None:
        """Run `callback` once this unit of work has committed (never after a rollback)."""
        self._after_commit.append(callback)

    def after_commit_once(self, key: str, callback: AfterCommit) -> None:
        """`after_commit`, unless a callback under the same `key` is already queued (one sealer nudge per
        unit of work however many audit entries it writes)."""
        if key in self._after_commit_keys:
            return
        self._after_commit_keys.add(key)
        self._after_commit.append(callback)

    def after_commit_required(self, key: str, callback: RequiredAfterCommit) -> None:
        """Run `callback` (once per `key`) after this unit of work commits and before it returns to its
        caller; unlike `after_commit`, a failure propagates: the request fails rather than answer without
        it (a read-only unit of work's audit entries)."""
        self._required.setdefault(key, callback)

    def after_rollback(self, job: AfterRollback) -> None:
        """Run `job` in a fresh unit of work once this one has ended, committed or not (denied-access audit
        entries: they must persist even though the request's own transaction rolls back)."""
        self._after_rollback.append(job)

    def on_rollback(self, callback: AfterCommit) -> None:
        """Run `callback` if this unit of work fails and rolls back before its commit, never after a commit
        nor after a failed commit (whose outcome is unknown): undo a side effect made outside the database,
        such as a stored blob (docs/files.md#orphans). Failures are logged; the original error wins."""
        self._on_rollback.append(callback)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Emit an event once this unit of work has committed; a no-op in a process without a bus."""
        bus = self.events
        if bus is None:
            return

        async def deliver() -> None:
            await bus.emit(topic, payload)

        self.after_commit(deliver)

    def component(self, key: type[C], factory: Callable[[], C]) -> C:
        """A per-process component shared by every unit of work of this database (e.g. the device-upload
        coalescer), created on first use."""
        return self.db.component(key, factory)


def as_uow(session: AsyncSession) -> UnitOfWork:
    """The unit of work behind a session typed as `AsyncSession` (every session Telecare opens is one)."""
    if not isinstance(session, UnitOfWork):
        raise TypeError("not a Telecare unit of work: open sessions with Database.unit_of_work()")
    return session


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the surrounding unit of work has committed (never after a rollback)."""
    as_uow(session).after_commit(callback)


class Database:
    """One engine and session factory per application or CLI process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.is_sqlite = self.url.startswith("sqlite")
        self.audit_key = settings.secret("audit_hmac_key").encode()
        self.events: EventBus | None = None
        # Group commit of device uploads is for long-running servers; a CLI command stores directly.
        self.group_commit = False
        # A long-running server seals audit entries in a background task; elsewhere (a CLI command, a test's
        # database) each unit of work that wrote entries seals them right after it commits.
        self.seal_in_background = False
        self._components: dict[type[Any], Any] = {}
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = self.url.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(sqlite_driver.engine_url(self.url), **kwargs)
        self._writer: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._writer_task: asyncio.Task[Any] | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine, begin=False)
            _manage_transactions(self)
        _guard_read_only(self.engine)
        # The same pool; connections checked out through it carry the read-only option.
        self._read_engine = self.engine.execution_options(**{_READ_ONLY: True})
        self.sessionmaker = async_sessionmaker(
            self.engine, class_=UnitOfWork, expire_on_commit=False, autoflush=False
        )

    # ---- SQLite's one writer, handed out in arrival order ----------------------------------------------

    async def acquire_writer(self) -> None:
        """Wait for the in-process SQLite writer lock (FIFO); a unit of work that already holds it in the
        same task would wait for itself, so that is refused at once instead of hanging."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer[0] is not loop:
            self._writer = (loop, asyncio.Lock())
        task = asyncio.current_task()
        if task is not None and task is self._writer_task:
            raise RuntimeError("a writing unit of work opened inside another one in the same task")
        try:
            await asyncio.wait_for(self._writer[1].acquire(), self.writer_timeout)
        except TimeoutError:
            raise TimeoutError("the database writer stayed busy; try again") from None
        self._writer_task = task

    def release_writer(self) -> None:
        self._writer_task = None
        if self._writer is not None and self._writer[1].locked():
            self._writer[1].release()

    writer_timeout = 30.0

    def component(self, key: type[C], factory: Callable[[], C]) -> C:
        found = self._components.get(key)
        if found is None:
            found = self._components[key] = factory()
        return cast(C, found)

    def components(self) -> list[Any]:
        return list(self._components.values())

    @contextlib.asynccontextmanager
    async def unit_of_work(self, *, read_only: bool = False) -> AsyncIterator[UnitOfWork]:
        """One transaction: commit on success, roll back on error, then run the required after-commit
        callbacks (their failure is the unit of work's) and the after-commit callbacks; in either case then
        run the queued independent writes, each batch in a fresh unit of work."""
        pending: list[AfterRollback] = []
        try:
            bind = self._read_engine if read_only else self.engine
            async with self.sessionmaker(bind=bind) as uow:
                uow.db = self
                uow.read_only = read_only
                uow.audit_drafts = []
                uow._after_commit = []
                uow._after_commit_keys = set()
                uow._required = {}
                uow._after_rollback = pending
                uow._on_rollback = []
                committing = False
                try:
                    yield uow
                    committing = True
                    await uow.commit()
                except BaseException:
                    try:
                        await uow.rollback()
                    finally:
                        undo, uow._on_rollback = uow._on_rollback, []
                        # A failed COMMIT may still have committed (the connection dropped before the
                        # answer): undoing then could delete what a committed row names, so only a unit of
                        # work that failed before its commit is undone (docs/files.md#orphans).
                        for callback in () if committing else undo:
                            try:
                                await callback()
                            except Exception:
                                log.exception("on-rollback callback failed")
                    raise
                uow._on_rollback = []
                required, uow._required = uow._required, {}
                for job in required.values():
                    await job(uow)
                callbacks, uow._after_commit = uow._after_commit, []
                for callback in callbacks:
                    try:
                        await callback()
                    except Exception:
                        log.exception("after-commit callback failed")
        except Exception:
            if pending:
                with contextlib.suppress(Exception):  # logged there; the original error wins
                    await self._run_independent(pending)
            raise
        if pending:
            await self._run_independent(pending)

    async def _run_independent(self, jobs: list[AfterRollback]) -> None:
        batch = list(jobs)
        jobs.clear()
        try:
            async with self.unit_of_work() as uow:
                for job in batch:
                    await job(uow)
        except Exception:
            log.exception("independent write after the unit of work failed")
            raise

    async def dispose(self) -> None:
        for component in self.components():
            stop = getattr(component, "stop", None)
            if stop is not None:
                with contextlib.suppress(Exception):
                    await stop()
        await self.engine.dispose()


class ReadOnlyViolation(RuntimeError):
    """A read-only unit of work tried to write (a programming error: open a writer for the action)."""


_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
_READ_ONLY = "tc_read_only"


def _manage_transactions(db: Database) -> None:
    """SQLite: every unit of work's transaction begins here. A read-only one (its engine carries the
    `tc_read_only` option) runs a plain, deferred BEGIN; a writer first waits for the in-process writer lock
    (awaited from inside SQLAlchemy's greenlet), then takes SQLite's own with BEGIN IMMEDIATE. The lock goes
    back when the connection returns to the pool, i.e. when the transaction has ended."""
    engine = db.engine.sync_engine

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        if not conn.info.get(_WRITER):
            await_only(db.acquire_writer())
            conn.info[_WRITER] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            conn.info.pop(_WRITER, None)
            db.release_writer()
            raise

    @event.listens_for(engine.pool, "checkin")
    def _release(_dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_WRITER, False):
            db.release_writer()


_WRITER = "tc_writer"


def _guard_read_only(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _refuse_writes(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _WRITE.match(statement) and conn.get_execution_options().get(_READ_ONLY):
            raise ReadOnlyViolation(f"a read-only unit of work tried to write: {statement[:80]}")


def _configure_sqlite(engine: AsyncEngine, *, begin: bool = True) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so we can emit BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    if not begin:
        return

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_null_pool_engine(url: str) -> AsyncEngine:
    """An engine for short-lived tools (migrations) that must not keep connections open."""
    engine = create_async_engine(sqlite_driver.engine_url(url), poolclass=NullPool)
    _configure_sqlite(engine)
    return engine
