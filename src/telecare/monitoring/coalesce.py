"""Group commit for device uploads: concurrent requests that arrive while a transaction is being written are
stored together in the next one (one commit, one fsync), each in its own savepoint, and each request is
answered only after that commit. One commit per small request caps SQLite with synchronous=FULL near
200 commits/s on this class of disk and PostgreSQL near 2,000/s (PERFORMANCE_CEILINGS.md); coalescing is
how single-reading posts get past that without weakening durability.

Only device-key callers use it: user callers go through the request's own unit of work, where a denied
patient is audited even though the request fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from telecare.core.db import Database
from telecare.monitoring.credentials import DeviceCaller
from telecare.monitoring.ingest import Outcome, StoreResult
from telecare.monitoring.models import ReadingSource

log = logging.getLogger(__name__)
MAX_READINGS_PER_COMMIT = 20_000


@dataclass
class _Job:
    caller: DeviceCaller
    drafts: list[Any]
    rejected: list[Outcome]
    source: ReadingSource
    kwargs: dict[str, str]
    future: asyncio.Future[StoreResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Coalescer:
    def __init__(self, db: Database, events: Any) -> None:
        self.db = db
        self.events = events
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def submit(
        self,
        caller: DeviceCaller,
        drafts: list[Any],
        rejected: list[Outcome],
        *,
        source: ReadingSource,
        **kwargs: str,
    ) -> StoreResult:
        job = _Job(caller, drafts, rejected, source, kwargs)
        self.queue.put_nowait(job)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return await asyncio.shield(job.future)

    async def _run(self) -> None:
        from telecare.monitoring.service import resolve_and_store

        while True:
            job = await self.queue.get()
            jobs = [job]
            size = len(job.drafts)
            while size < MAX_READINGS_PER_COMMIT and not self.queue.empty():
                more = self.queue.get_nowait()
                jobs.append(more)
                size += len(more.drafts)
            results: dict[int, StoreResult | BaseException] = {}
            try:
                async with self.db.unit_of_work() as session:
                    session.info["events"] = self.events
                    for n, j in enumerate(jobs):
                        try:
                            async with session.begin_nested():
                                results[n] = await resolve_and_store(
                                    session, j.caller, j.drafts, j.rejected, source=j.source, **j.kwargs
                                )
                        except Exception as exc:  # one bad request must not sink the others
                            log.exception("coalesced ingest job failed")
                            results[n] = exc
            except BaseException as exc:
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for n, j in enumerate(jobs):
                if j.future.done():
                    continue
                outcome = results[n]
                if isinstance(outcome, BaseException):
                    j.future.set_exception(outcome)
                else:
                    j.future.set_result(outcome)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


def coalescer_for(app: Any) -> Coalescer:
    found: Coalescer | None = getattr(app.state, "rpm_coalescer", None)
    if found is None:
        found = Coalescer(app.state.db, app.state.events)
        app.state.rpm_coalescer = found
    return found
