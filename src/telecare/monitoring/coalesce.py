"""Group commit for device uploads: concurrent requests that arrive while a transaction is being written are
stored together in the next one (one commit, one fsync), each in its own savepoint, and each request is
answered only after that commit. One commit per small request caps SQLite with synchronous=FULL near
200 commits/s on this class of disk and PostgreSQL near 2,000/s (docs/performance.md#database-ceilings);
coalescing is how single-reading posts get past that without weakening durability.

Only device-key callers use it: user callers go through the request's own unit of work, where a denied
patient is audited even though the request fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from telecare.core.db import Database
from telecare.monitoring.credentials import DeviceCaller
from telecare.monitoring.ingest import Outcome, StoreResult
from telecare.monitoring.models import ReadingSource

log = logging.getLogger(__name__)
MAX_READINGS_PER_COMMIT = 20_000
# The pipeline the coalescer runs for a group (monitoring.service.resolve_and_store, passed in so that this
# module does not import the service back).
Store = Callable[..., Awaitable[StoreResult]]


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
    def __init__(self, db: Database, store: Store) -> None:
        self.db = db
        self.store = store
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
                    groups: dict[tuple[Any, ...], list[int]] = {}
                    for n, j in enumerate(jobs):
                        key = (j.caller.key_id, j.source, tuple(sorted(j.kwargs.items())))
                        groups.setdefault(key, []).append(n)
                    for members in groups.values():
                        await self._store_group(session, [jobs[n] for n in members], members, results)
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

    async def _store_group(
        self,
        session: Any,
        jobs: list[_Job],
        numbers: list[int],
        results: dict[int, StoreResult | BaseException],
    ) -> None:
        """One pipeline call for all requests of one credential (their drafts renumbered, the outcomes split
        back); if it fails, each request is retried alone in its own savepoint."""
        resolve_and_store = self.store
        owner: dict[int, tuple[int, int]] = {}  # combined index -> (job position, original index)
        combined: list[Any] = []
        for pos, j in enumerate(jobs):
            for d in j.drafts:
                owner[len(combined)] = (pos, d.index)
                combined.append(replace(d, index=len(combined)))
        first = jobs[0]
        try:
            async with session.begin_nested():
                merged = await resolve_and_store(
                    session, first.caller, combined, [], source=first.source, **first.kwargs
                )
        except Exception:
            log.exception("coalesced ingest failed; storing each request alone")
            for pos, j in enumerate(jobs):
                try:
                    async with session.begin_nested():
                        results[numbers[pos]] = await resolve_and_store(
                            session, j.caller, j.drafts, j.rejected, source=j.source, **j.kwargs
                        )
                except Exception as exc:
                    results[numbers[pos]] = exc
            return
        per_job: list[list[Outcome]] = [list(j.rejected) for j in jobs]
        reading_owner: dict[int, int] = {}
        for o in merged.outcomes:
            pos, original = owner[o.index]
            per_job[pos].append(Outcome(original, o.status, o.id, o.errors))
            if o.id is not None and o.status == "created":
                reading_owner[o.id] = pos
        for pos in range(len(jobs)):
            opened = [rid for rid in merged.opened_by if reading_owner.get(rid) == pos]
            results[numbers[pos]] = StoreResult(sorted(per_job[pos], key=lambda o: o.index), opened)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
