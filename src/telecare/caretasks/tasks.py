"""The clock-driven escalation of care-team tasks nobody acknowledged (docs/caretasks.md#escalation). Run
once from the CLI-free test helper `run_due`, or in a loop in the app (same interval as the RPM sweep)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telecare.caretasks import service
from telecare.core import jobs
from telecare.core.db import Database

log = logging.getLogger(__name__)


async def run_due(db: Database) -> int:
    """One escalation round in one unit of work; 0 while another worker runs it (core/jobs.py)."""
    async with db.unit_of_work() as session:
        if not await jobs.claim(session, "caretasks.escalate"):
            return 0
        return await service.escalate_overdue(session)


async def background_loop(app: Any) -> None:
    interval = app.state.settings.rpm_background_interval_seconds
    if interval <= 0:
        await asyncio.Event().wait()
    while True:
        await asyncio.sleep(interval)
        try:
            await run_due(app.state.db)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("care-task escalation failed")
