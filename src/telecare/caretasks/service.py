"""Care-team task actions (docs/caretasks.md).

`raise_task` is how another domain's action hands the care team work that must not wait in an inbox: a
PHQ-9 item-9 answer, a triage call-back. It runs inside the caller's unit of work (the task commits with
the answer that caused it, or not at all), audits, and publishes `caretask.changed` after commit."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from telecare.auth.principal import Principal

if TYPE_CHECKING:
    from telecare.caretasks.models import CareTask


async def raise_task(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    kind: str,
    title: str,
    detail: str,
    priority: str = "urgent",
    due_within: timedelta = timedelta(hours=1),
    source_kind: str = "",
    source_id: str = "",
    assignee_user_id: int | None = None,
) -> CareTask:
    """Raise a task for the patient's care team in the caller's transaction. `principal` is whoever caused
    it (the patient submitting an answer, the nurse triaging); the caller has already authorised that
    action on the patient, so raising the task needs no grant of its own. One open task per (patient, kind,
    source): raising it again returns the open one. `priority` is a FHIR Task.priority ("routine",
    "urgent", "asap", "stat")."""
    raise NotImplementedError
