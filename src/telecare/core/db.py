"""Engine, sessions and the unit of work. The only place that begins and commits transactions.

SQLite: WAL journal, foreign keys on, synchronous=FULL so an acknowledged commit survives a process crash
and power loss (docs/security.md#database-durability), and BEGIN IMMEDIATE so there is one writer at a time
(audit entry ids are MAX(id) + 1, and the audit sealer's chain never forks). PostgreSQL: defaults (fsync on,
synchronous_commit on).
"""

from __future__ import annotations

import contextlib
import logging
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

from telecare.config import Settings

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
    _after_commit: list[AfterCommit]
    _after_commit_keys: set[str]
    _after_rollback: list[AfterRollback]

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

    def after_rollback(self, job: AfterRollback) -> None:
        """Run `job` in a fresh unit of work once this one has ended, committed or not (denied-access audit
        entries: they must persist even though the request's own transaction rolls back)."""
        self._after_rollback.append(job)

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
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessionmaker = async_sessionmaker(
            self.engine, class_=UnitOfWork, expire_on_commit=False, autoflush=False
        )

    def component(self, key: type[C], factory: Callable[[], C]) -> C:
        found = self._components.get(key)
        if found is None:
            found = self._components[key] = factory()
        return cast(C, found)

    def components(self) -> list[Any]:
        return list(self._components.values())

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """One transaction: commit on success, roll back on error, then run after-commit callbacks; in
        either case then run the queued independent writes, each batch in a fresh unit of work."""
        pending: list[AfterRollback] = []
        try:
            async with self.sessionmaker() as uow:
                uow.db = self
                uow._after_commit = []
                uow._after_commit_keys = set()
                uow._after_rollback = pending
                try:
                    yield uow
                    await uow.commit()
                except BaseException:
                    await uow.rollback()
                    raise
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


def _configure_sqlite(engine: AsyncEngine) -> None:
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

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_null_pool_engine(url: str) -> AsyncEngine:
    """An engine for short-lived tools (migrations) that must not keep connections open."""
    engine = create_async_engine(url, poolclass=NullPool)
    _configure_sqlite(engine)
    return engine
