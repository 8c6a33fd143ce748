"""Group commit of audit entries for read-only units of work (docs/audit.md#group-commit).

A GET reads in its own read-only transaction and hands its entries here when its reads are done; it is
answered only once they are committed. Requests that arrive while one batch is being written go into the
next one: one transaction and one fsync for many reads, instead of a write transaction (and on SQLite the
single writer) per read. The entries keep everything the request path gave them (time of access, actor,
patient, purpose); their ids and MACs are assigned in the group's transaction, and the sealer then links
them into the chain like any other entry.

In a process without group commit (a CLI command, a test's bare database) each unit of work writes its own
entries, at once, in a fresh transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telecare.audit.models import AuditEntry
from telecare.core.db import Database

log = logging.getLogger(__name__)
MAX_ENTRIES_PER_COMMIT = 5_000


@dataclass
class _Job:
    entries: list[AuditEntry]
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AuditWriter:
    def __init__(self, db: Database, store: Callable[..., Awaitable[None]]) -> None:
        # store: audit/service.py store_entries (ids, MACs and the bulk insert, in the group's transaction)
        self.db = db
        self.store = store
        self.queue: list[_Job] = []
        self.task: asyncio.Task[None] | None = None
        self.commits = 0  # group transactions committed (tests and benchmarks)

    async def write(self, entries: list[AuditEntry]) -> None:
        """Return once `entries` are committed; raise if they could not be."""
        if not entries:
            return
        if not self.db.group_commit:
            await self._store(entries)
            return
        job = _Job(entries)
        self.queue.append(job)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="audit-group-commit")
        await asyncio.shield(job.future)

    async def _store(self, entries: list[AuditEntry]) -> None:
        async with self.db.unit_of_work() as uow:
            await self.store(uow, entries, key=self.db.audit_key)
        self.commits += 1

    async def _run(self) -> None:
        # Exits when the queue is empty; `write` starts a new run for the next entry. There is no await
        # between the emptiness check and the return, so no entry can be queued behind a finished run.
        while self.queue:
            jobs: list[_Job] = []
            size = 0
            while self.queue and size < MAX_ENTRIES_PER_COMMIT:
                job = self.queue.pop(0)
                jobs.append(job)
                size += len(job.entries)
            try:
                await self._store([e for j in jobs for e in j.entries])
            except asyncio.CancelledError as exc:
                _fail(jobs, exc)
                raise
            except Exception as exc:
                if len(jobs) == 1:
                    _fail(jobs, exc)
                    continue
                # One request's entries must not fail every other request of the group: each alone.
                log.exception("audit group commit failed; writing each request's entries alone")
                for job in jobs:
                    try:
                        await self._store(job.entries)
                    except Exception as alone:
                        _fail([job], alone)
                    else:
                        job.future.set_result(None)
                continue
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(None)

    async def stop(self) -> None:
        """Finish what is queued (a clean shutdown answers every waiting request)."""
        task = self.task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except Exception:
                log.exception("audit group commit did not finish before shutdown")


def _fail(jobs: list[_Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
