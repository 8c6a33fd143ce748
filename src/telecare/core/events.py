"""Cross-worker events (alerts, signaling, live status): delivered only after commit.

On SQLite (one process) events go straight to local subscribers. On PostgreSQL they travel through
LISTEN/NOTIFY on one channel so every worker's subscribers see them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from telecare.core.db import Database, after_commit

log = logging.getLogger(__name__)
CHANNEL = "telecare_events"
MAX_NOTIFY_BYTES = 7900  # PostgreSQL NOTIFY payloads must stay under 8000 bytes


class EventBus:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._ready = asyncio.Event()
        # One publishing connection per process, reused: opening a connection per NOTIFY capped signaling
        # near 100 concurrent visits on two workers (bench/signaling.py) and could exhaust max_connections.
        self._publisher: Any = None
        self._publish_lock = asyncio.Lock()

    @property
    def uses_postgres(self) -> bool:
        return not self.db.is_sqlite

    async def start(self) -> None:
        if self.uses_postgres and self._listener is None:
            self._listener = asyncio.create_task(self._listen())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.close()
            self._publisher = None

    def _dsn(self) -> str:
        return self.db.url.replace("postgresql+psycopg://", "postgresql://", 1)

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                self._conn = await psycopg.AsyncConnection.connect(self._dsn(), autocommit=True)
                await self._conn.execute(f"LISTEN {CHANNEL}")
                self._ready.set()
                async for note in self._conn.notifies():
                    try:
                        message = json.loads(note.payload)
                    except ValueError:
                        continue
                    self._deliver_local(message["topic"], message["payload"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event listener reconnecting after %s", type(exc).__name__)
                await asyncio.sleep(1)

    def _deliver_local(self, topic: str, payload: dict[str, Any]) -> None:
        for queue in list(self._subscribers.get(topic, ())):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(payload)

    async def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Deliver now (use `publish` inside a unit of work so nothing leaves before commit)."""
        if not self.uses_postgres:
            self._deliver_local(topic, payload)
            return
        data = json.dumps({"topic": topic, "payload": payload}, default=str)
        if len(data.encode()) > MAX_NOTIFY_BYTES:
            raise ValueError("event payload too large for NOTIFY; send ids, not documents")
        import psycopg

        async with self._publish_lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher.closed:
                        self._publisher = await psycopg.AsyncConnection.connect(self._dsn(), autocommit=True)
                    await self._publisher.execute("SELECT pg_notify(%s, %s)", (CHANNEL, data))
                    return
                except psycopg.OperationalError:
                    with contextlib.suppress(Exception):
                        await self._publisher.close()
                    self._publisher = None
                    if attempt == 2:
                        raise

    def publish(self, session: AsyncSession, topic: str, payload: dict[str, Any]) -> None:
        """Emit once the session's unit of work has committed."""

        async def deliver() -> None:
            await self.emit(topic, payload)

        after_commit(session, deliver)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, *topics: str, maxsize: int = 1000
    ) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        for topic in topics:
            self._subscribers[topic].add(queue)
        try:
            yield queue
        finally:
            for topic in topics:
                self._subscribers[topic].discard(queue)


def attach(db: Database) -> EventBus:
    """Give `db` an event bus (the app does at start-up; a CLI command does, so the events its actions
    publish reach the servers' workers)."""
    if db.events is None:
        db.events = EventBus(db)
    return db.events
