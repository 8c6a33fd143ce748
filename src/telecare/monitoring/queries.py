"""Reading queries every surface shares (REST, FHIR), each starting from the caller's patient scope and
audited like any other read of health data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.monitoring.models import Reading

_COMPARE = {
    "ge": lambda col, t: col >= t,
    "gt": lambda col, t: col > t,
    "le": lambda col, t: col <= t,
    "lt": lambda col, t: col < t,
    "eq": lambda col, t: col == t,
}


async def search_readings(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int | None = None,
    codes: Sequence[str] | None = None,
    measured: Sequence[tuple[str, datetime]] = (),
    offset: int = 0,
    limit: int = 50,
    query_params: Sequence[str] = (),
) -> tuple[int, list[Reading]]:
    """Readings the caller may search, newest first: (total matching, one page).

    Naming a patient out of reach answers 404 and audits a denial naming them, as every per-patient door
    does; across patients, readings out of reach are simply absent. `measured` holds (prefix, instant)
    pairs, prefix one of ge, gt, le, lt, eq."""
    if patient_id is not None:
        await access.open_patient(
            session,
            principal,
            patient_id,
            resource=Resource.OBSERVATION,
            action=Action.SEARCH,
            audit_access=False,
        )
    scope = access.patient_scope(principal, Resource.OBSERVATION, Action.SEARCH).scalar_subquery()
    conditions: list[Any] = [Reading.patient_id.in_(scope), Reading.org_id == principal.org_id]
    if patient_id is not None:
        conditions.append(Reading.patient_id == patient_id)
    if codes is not None:
        conditions.append(Reading.code.in_(list(codes)))
    for prefix, moment in measured:
        conditions.append(_COMPARE[prefix](Reading.measured_at, moment))
    total = (await session.execute(select(func.count(Reading.id)).where(*conditions))).scalar_one()
    rows = list(
        (
            await session.execute(
                select(Reading)
                .where(*conditions)
                .order_by(Reading.measured_at.desc(), Reading.id.desc())
                .offset(offset)
                .limit(limit)
            )
        ).scalars()
    )
    await access.record_search(
        session,
        principal,
        resource=Resource.OBSERVATION,
        patient_ids=[r.patient_id for r in rows],
        query={"params": list(query_params)},
    )
    return int(total), rows
