"""RPM billing: every band edge of 99453, 99454 vs 99445, 99470/99457/99458 and 99091, with facts."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.monitoring.billing import management_lines, periods_ending_in, supply_line
from tests.factories import bearer, setup_uow, token_for
from tests.monitoring.conftest import build_clinic


@pytest.mark.parametrize(
    ("days", "code"),
    [(0, None), (1, None), (2, "99445"), (15, "99445"), (16, "99454"), (30, "99454")],
)
def test_device_supply_band_edges(days: int, code: str | None) -> None:
    line = supply_line(days)
    assert (line[0] if line else None) == code


@pytest.mark.parametrize(
    ("minutes", "interactive", "expected"),
    [
        (9, 1, []),
        (10, 1, [("99470", 1)]),
        (19, 1, [("99470", 1)]),
        (20, 1, [("99457", 1)]),
        (39, 1, [("99457", 1)]),
        (40, 1, [("99457", 1), ("99458", 1)]),
        (59, 1, [("99457", 1), ("99458", 1)]),
        (60, 1, [("99457", 1), ("99458", 2)]),
        (45, 0, []),  # no real-time interactive communication: nothing
    ],
)
def test_management_band_edges(minutes: int, interactive: int, expected: list[tuple[str, int]]) -> None:
    assert [(c, u) for c, _, u in management_lines(minutes, interactive)] == expected


@given(minutes=st.integers(0, 400), interactive=st.integers(0, 3))
def test_99470_and_99457_are_never_both(minutes: int, interactive: int) -> None:
    codes = [c for c, _, _ in management_lines(minutes, interactive)]
    assert not ({"99470", "99457"} <= set(codes))
    assert ("99458" in codes) <= ("99457" in codes)


def test_thirty_day_periods_ending_in_a_month() -> None:
    start = date(2026, 10, 5)
    assert (
        periods_ending_in(start, date(2026, 11, 1), date(2026, 12, 1), None)
        == [
            (0, date(2026, 10, 5), date(2026, 11, 3)),
            (1, date(2026, 11, 4), date(2026, 12, 3)),
        ][:1]
    )
    assert (
        periods_ending_in(start, date(2026, 12, 1), date(2027, 1, 1), None)
        == [
            (1, date(2026, 11, 4), date(2026, 12, 3)),
            (2, date(2026, 12, 4), date(2027, 1, 2)),
        ][:1]
    )


async def test_monthly_worklist_lines_with_facts(client: httpx.AsyncClient, db: Database) -> None:
    freeze_clock(datetime(2026, 12, 10, 15, tzinfo=UTC))
    clinic = await build_clinic(db)
    # a second enrolment started on 2026-11-01 (the clinic fixture enrols today)
    from sqlalchemy import update

    from telecare.monitoring.models import RpmEnrolment

    async with setup_uow(db) as s:
        await s.execute(update(RpmEnrolment).values(started_on=date(2026, 11, 1)))
    cuff = clinic.serials["bp_cuff"]
    # 16 distinct local days in the first period (Nov 1 - Nov 30); two readings on one day count once
    items = []
    for day in range(16):
        t = datetime(2026, 11, 2 + day, 14, tzinfo=UTC)
        items.append(
            {
                "device": cuff,
                "measured_at": t.isoformat(),
                "kind": "blood_pressure",
                "systolic": 120,
                "diastolic": 80,
                "unit": "mm[Hg]",
            }
        )
    items.append({**items[0], "measured_at": datetime(2026, 11, 2, 20, tzinfo=UTC).isoformat()})
    r = await client.post("/api/v1/monitoring/readings", json=items, headers=bearer(clinic.key))
    assert r.json()["created"] == 17
    nurse = await token_for(db, clinic.nurse)
    physician = await token_for(db, clinic.physician)
    for kind, minutes, who in [
        ("message", 15, nurse),
        ("management", 10, nurse),
        ("call", 16, nurse),
        ("interpretation", 30, physician),
    ]:
        r = await client.post(
            f"/api/v1/monitoring/patients/{clinic.patient}/time",
            json={"kind": kind, "minutes": minutes, "performed_at": "2026-11-20T15:00:00+00:00"},
            headers=bearer(who),
        )
        assert r.status_code == 201, r.text
    r = await client.post(
        f"/api/v1/monitoring/patients/{clinic.patient}/time",
        json={"kind": "interpretation", "minutes": 30},
        headers=bearer(nurse),
    )
    assert r.status_code == 422
    rows = (await client.get("/api/v1/monitoring/billing?month=2026-11", headers=bearer(nurse))).json()
    [row] = rows
    lines = {line["code"]: line for line in row["lines"]}
    assert set(lines) == {"99453", "99454", "99457", "99458", "99091"}
    assert lines["99454"]["facts"] == {"period": "2026-11-01 to 2026-11-30", "days_with_device_data": 16}
    assert lines["99457"]["facts"]["management_minutes"] == 41
    assert lines["99457"]["facts"]["real_time_interactive_communications"] == 1
    assert lines["99458"]["units"] == 1
    assert lines["99091"]["facts"]["physician_interpretation_minutes"] == 30
    assert all(line["status"] == "billable" for line in row["lines"])
    # December: the second period has no data yet and no time: no lines, facts still shown
    [dec] = (await client.get("/api/v1/monitoring/billing?month=2026-12", headers=bearer(nurse))).json()
    assert dec["lines"] == []
    assert dec["facts"]["management_minutes"] == 0
    outsider = await token_for(db, clinic.outsider)
    assert (
        await client.get("/api/v1/monitoring/billing?month=2026-11", headers=bearer(outsider))
    ).json() == []


async def test_fifteen_days_is_99445_and_no_time_without_enrolment(
    client: httpx.AsyncClient, db: Database
) -> None:
    freeze_clock(datetime(2026, 12, 10, 15, tzinfo=UTC))
    clinic = await build_clinic(db)
    from sqlalchemy import update

    from telecare.monitoring.models import RpmEnrolment

    async with setup_uow(db) as s:
        await s.execute(update(RpmEnrolment).values(started_on=date(2026, 11, 1)))
    cuff = clinic.serials["bp_cuff"]
    items = [
        {
            "device": cuff,
            "measured_at": datetime(2026, 11, 2 + d, 14, tzinfo=UTC).isoformat(),
            "kind": "blood_pressure",
            "systolic": 120,
            "diastolic": 80,
            "unit": "mm[Hg]",
        }
        for d in range(15)
    ]
    await client.post("/api/v1/monitoring/readings", json=items, headers=bearer(clinic.key))
    nurse = await token_for(db, clinic.nurse)
    [row] = (await client.get("/api/v1/monitoring/billing?month=2026-11", headers=bearer(nurse))).json()
    assert [line["code"] for line in row["lines"]] == ["99453", "99445"]
    r = await client.post(
        f"/api/v1/monitoring/patients/{clinic.other_patient}/time",
        json={"kind": "call", "minutes": 5},
        headers=bearer(nurse),
    )
    assert r.status_code == 404
