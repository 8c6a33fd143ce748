"""The monthly RPM billing worklist (CY2026 codes, docs/rpm.md#rpm-codes). Every line carries its facts.

- 99453 set-up and education: once per episode, with the first 30-day period that has device data
  (docs/rpm.md#rpm-codes flags whether CMS ties it to >= 16 or >= 2 days in 2026 as unverified; we use >= 2).
- Device supply per 30-day period from the episode start: 99454 for 16-30 days with data, 99445 (new in
  2026) for 2-15 days; never both for one period.
- Treatment management per calendar month, needing >= 1 real-time interactive communication: 99470 (new in
  2026) for 10-19 minutes, 99457 for >= 20 minutes, plus 99458 per additional full 20 minutes. 99470 and
  99457 are alternatives, never both. Device codes and management codes are independent (Prevounce
  2025-12-02).
- 99091 physician/QHP collection and interpretation: >= 30 minutes (counted per calendar month
  here)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.time import utc_now
from telecare.identity.models import Patient, Practitioner, User
from telecare.monitoring.models import Reading, ReadingSource, RpmEnrolment, TimeEntry, TimeKind

PERIOD_DAYS = 30
SUPPLY_FULL_MIN_DAYS = 16  # 99454: 16-30 days
SUPPLY_SHORT_MIN_DAYS = 2  # 99445: 2-15 days
SETUP_MIN_DAYS = 2  # 99453 (unverified whether 16 or 2 in 2026)
MGMT_SHORT_MIN = 10  # 99470: first 10 minutes (10-19)
MGMT_FIRST_MIN = 20  # 99457: first 20 minutes
MGMT_ADDON_MIN = 20  # 99458: each additional 20 minutes
INTERPRETATION_MIN = 30  # 99091: >= 30 minutes
INTERACTIVE = (TimeKind.CALL, TimeKind.VIDEO)  # real-time interactive communication
MANAGEMENT_KINDS = (TimeKind.CALL, TimeKind.VIDEO, TimeKind.MESSAGE, TimeKind.MANAGEMENT)


@dataclass
class Line:
    code: str
    description: str
    units: int
    status: str  # billable | in progress
    facts: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Row:
    patient_id: int
    patient_name: str
    mrn: str
    enrolment_id: int
    lines: list[Line] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "lines": [line.as_json() for line in self.lines]}


def month_bounds(first: date) -> tuple[date, date]:
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, nxt


def supply_line(days_with_data: int) -> tuple[str, str] | None:
    if days_with_data >= SUPPLY_FULL_MIN_DAYS:
        return "99454", "Device supply, 16-30 days of data in the 30-day period"
    if days_with_data >= SUPPLY_SHORT_MIN_DAYS:
        return "99445", "Device supply, 2-15 days of data in the 30-day period"
    return None


def management_lines(minutes: int, interactive: int) -> list[tuple[str, str, int]]:
    """(code, description, units) for a month's management minutes."""
    if interactive < 1 or minutes < MGMT_SHORT_MIN:
        return []
    if minutes < MGMT_FIRST_MIN:
        return [("99470", "RPM treatment management, first 10 minutes", 1)]
    out = [("99457", "RPM treatment management, first 20 minutes", 1)]
    extra = (minutes - MGMT_FIRST_MIN) // MGMT_ADDON_MIN
    if extra:
        out.append(("99458", "RPM treatment management, each additional 20 minutes", extra))
    return out


def periods_ending_in(
    start: date, first: date, end_excl: date, until: date | None
) -> list[tuple[int, date, date]]:
    """30-day periods of an episode that end within [first, end_excl): (index, first day, last day)."""
    out = []
    k = max(0, ((first - start).days - (PERIOD_DAYS - 1)) // PERIOD_DAYS)
    while True:
        p_start = start + timedelta(days=PERIOD_DAYS * k)
        p_end = p_start + timedelta(days=PERIOD_DAYS - 1)
        if p_end >= end_excl or (until is not None and p_start > until):
            break
        if p_end >= first:
            out.append((k, p_start, p_end))
        k += 1
    return out


async def worklist(session: AsyncSession, principal: Principal, *, month: date | None = None) -> list[Row]:
    """One row per enrolled patient the caller may bill for, for the calendar month starting `month`."""
    today = utc_now().date()
    first, end_excl = month_bounds(month or today.replace(day=1))
    scope = access.patient_scope(principal, Resource.RPM_BILLING, Action.SEARCH).scalar_subquery()
    enrol_rows = (
        await session.execute(
            select(RpmEnrolment, Patient, User.display_name)
            .join(Patient, Patient.id == RpmEnrolment.patient_id)
            .join(Practitioner, Practitioner.id == RpmEnrolment.ordering_practitioner_id)
            .join(User, User.id == Practitioner.user_id)
            .where(
                RpmEnrolment.patient_id.in_(scope),
                RpmEnrolment.started_on < end_excl,
                or_(RpmEnrolment.ended_on.is_(None), RpmEnrolment.ended_on >= first),
            )
            .order_by(Patient.family_name, Patient.given_name, RpmEnrolment.id)
        )
    ).all()
    rows: list[Row] = []
    for enrolment, patient, ordering_name in enrol_rows:
        row = Row(patient.id, f"{patient.family_name}, {patient.given_name}", patient.mrn, enrolment.id)
        row.facts = {
            "episode_start": enrolment.started_on.isoformat(),
            "consent": f"{enrolment.consent_method} on {enrolment.consent_at.date().isoformat()}",
            "ordering_practitioner": ordering_name,
            "programs": enrolment.programs,
        }
        periods = periods_ending_in(enrolment.started_on, first, end_excl, enrolment.ended_on)
        for k, p_start, p_end in periods:
            days = await data_days(session, patient.id, p_start, p_end)
            status = "billable" if p_end < today else "in progress"
            facts = {
                "period": f"{p_start.isoformat()} to {p_end.isoformat()}",
                "days_with_device_data": days,
            }
            if k == 0 and days >= SETUP_MIN_DAYS:
                row.lines.append(
                    Line(
                        "99453",
                        "Initial set-up and patient education (once per episode)",
                        1,
                        status,
                        {
                            **facts,
                            "episode_start": row.facts["episode_start"],
                            "consent": row.facts["consent"],
                        },
                    )
                )
            supply = supply_line(days)
            if supply is not None:
                row.lines.append(Line(supply[0], supply[1], 1, status, facts))
        minutes, interactive, interpretation, by_kind = await month_minutes(
            session, enrolment.id, first, end_excl
        )
        mgmt_facts = {
            "month": first.strftime("%Y-%m"),
            "management_minutes": minutes,
            "real_time_interactive_communications": interactive,
            "minutes_by_kind": by_kind,
        }
        status = "billable" if end_excl <= today else "in progress"
        for code, desc, units in management_lines(minutes, interactive):
            row.lines.append(Line(code, desc, units, status, mgmt_facts))
        if interpretation >= INTERPRETATION_MIN:
            row.lines.append(
                Line(
                    "99091",
                    "Collection and interpretation of physiologic data by physician/QHP (>= 30 min)",
                    1,
                    status,
                    {"month": first.strftime("%Y-%m"), "physician_interpretation_minutes": interpretation},
                )
            )
        row.facts.update(mgmt_facts)
        row.facts["physician_interpretation_minutes"] = interpretation
        rows.append(row)
    await access.record_search(
        session,
        principal,
        resource=Resource.RPM_BILLING,
        patient_ids=[r.patient_id for r in rows],
        query={"month": first.isoformat()},
    )
    return rows


async def data_days(session: AsyncSession, patient_id: int, first: date, last: date) -> int:
    """Distinct patient-local days with device-transmitted readings (manual entries do not count)."""
    from datetime import UTC, datetime, time

    start = datetime.combine(first, time.min, UTC) - timedelta(hours=14)
    end = datetime.combine(last + timedelta(days=1), time.min, UTC) + timedelta(hours=14)
    rows = await session.execute(
        select(Reading.measured_at, Reading.utc_offset_minutes).where(
            Reading.patient_id == patient_id,
            Reading.source != str(ReadingSource.MANUAL),
            Reading.measured_at >= start,
            Reading.measured_at < end,
        )
    )
    days = set()
    for t, offset in rows.all():
        local_day = (t + timedelta(minutes=offset)).date()
        if first <= local_day <= last:
            days.add(local_day)
    return len(days)


async def month_minutes(
    session: AsyncSession, enrolment_id: int, first: date, end_excl: date
) -> tuple[int, int, int, dict[str, int]]:
    """(management minutes, real-time interactive count, physician interpretation minutes, by kind)."""
    from datetime import UTC, datetime, time

    start = datetime.combine(first, time.min, UTC)
    end = datetime.combine(end_excl, time.min, UTC)
    rows = await session.execute(
        select(TimeEntry.kind, func.count(TimeEntry.id), func.sum(TimeEntry.minutes))
        .where(
            and_(
                TimeEntry.enrolment_id == enrolment_id,
                TimeEntry.performed_at >= start,
                TimeEntry.performed_at < end,
            )
        )
        .group_by(TimeEntry.kind)
    )
    by_kind: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for kind, count, total in rows.all():
        by_kind[str(kind)] += int(total or 0)
        counts[str(kind)] += int(count)
    minutes = sum(by_kind[str(k)] for k in MANAGEMENT_KINDS)
    interactive = sum(counts[str(k)] for k in INTERACTIVE)
    return minutes, interactive, by_kind[str(TimeKind.INTERPRETATION)], dict(by_kind)
