"""CGM consensus metrics and the ambulatory glucose profile (AGP).

International Consensus on Time in Range (Battelino et al., Diabetes Care 2019;42:1593;
docs/rpm.md#cgm-metrics): TIR 70-180 mg/dL, TBR < 70 and < 54, TAR > 180 and > 250, mean glucose, GMI and
%CV, reported only with at least 14 days of data and at least 70 % sensor wear."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.time import utc_now
from telecare.monitoring.codes import Kind
from telecare.monitoring.models import Reading

MIN_DAYS = 14  # consensus data sufficiency: >= 14 days ...
MIN_WEAR_PERCENT = 70.0  # ... with >= 70 % of possible CGM readings
DEFAULT_INTERVAL_MIN = 5.0  # most CGMs report every 5 minutes (some every 15)


def gmi_percent(mean_mg_dl: float) -> float:
    """Glucose management indicator (Bergenstal et al., Diabetes Care 2018;41:2275): 3.31 + 0.02392 x mean."""
    return 3.31 + 0.02392 * mean_mg_dl


@dataclass
class CgmReport:
    days: int
    readings: int
    interval_minutes: float
    wear_percent: float
    sufficient: bool
    reason: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    agp: list[dict[str, float]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _percentile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def compute(values: list[tuple[datetime, float, int]], *, days: int) -> CgmReport:
    """`values`: (measured_at UTC, mg/dL, UTC offset minutes) of CGM readings in the period."""
    n = len(values)
    times = sorted(t for t, _, _ in values)
    gaps = [(b - a).total_seconds() / 60 for a, b in itertools.pairwise(times) if b > a]
    interval = min(15.0, max(1.0, statistics.median(gaps))) if gaps else DEFAULT_INTERVAL_MIN
    possible = days * 24 * 60 / interval
    wear = min(100.0, 100.0 * n / possible) if possible else 0.0
    reason = None
    if days < MIN_DAYS:
        reason = f"period of {days} days is shorter than the {MIN_DAYS} days the consensus requires"
    elif wear < MIN_WEAR_PERCENT:
        reason = f"sensor wear {wear:.0f} % is below the {MIN_WEAR_PERCENT:.0f} % the consensus requires"
    report = CgmReport(days, n, round(interval, 1), round(wear, 1), reason is None, reason)
    if n == 0:
        return report
    glucose = [v for _, v, _ in values]
    report.agp = agp(values)
    if reason is not None:
        return report
    mean = statistics.fmean(glucose)
    sd = statistics.pstdev(glucose)

    def pct(pred: Any) -> float:
        return round(100.0 * sum(1 for g in glucose if pred(g)) / n, 1)

    report.metrics = {
        "time_in_range_70_180": pct(lambda g: 70 <= g <= 180),
        "time_below_70": pct(lambda g: g < 70),
        "time_below_54": pct(lambda g: g < 54),
        "time_above_180": pct(lambda g: g > 180),
        "time_above_250": pct(lambda g: g > 250),
        "mean_glucose": round(mean, 1),
        "gmi": round(gmi_percent(mean), 1),
        "cv": round(100.0 * sd / mean, 1) if mean else 0.0,
    }
    return report


def agp(values: list[tuple[datetime, float, int]]) -> list[dict[str, float]]:
    """Hourly percentiles (5, 25, 50, 75, 95) by the patient's local time of day, all days overlaid."""
    bins: list[list[float]] = [[] for _ in range(24)]
    for t, v, offset in values:
        local = t + timedelta(minutes=offset)
        bins[local.hour].append(v)
    out = []
    for hour, vals in enumerate(bins):
        if not vals:
            continue
        vals.sort()
        out.append(
            {
                "hour": hour,
                "p5": round(_percentile(vals, 0.05), 1),
                "p25": round(_percentile(vals, 0.25), 1),
                "p50": round(_percentile(vals, 0.50), 1),
                "p75": round(_percentile(vals, 0.75), 1),
                "p95": round(_percentile(vals, 0.95), 1),
            }
        )
    return out


async def patient_report(
    session: AsyncSession, principal: Principal, *, patient_id: int, days: int = 14
) -> CgmReport:
    await access.open_patient(
        session, principal, patient_id, resource=Resource.OBSERVATION, action=Action.READ
    )
    end = utc_now()
    rows = await session.execute(
        select(Reading.measured_at, Reading.value, Reading.utc_offset_minutes).where(
            Reading.patient_id == patient_id,
            Reading.kind == str(Kind.CGM),
            Reading.measured_at >= end - timedelta(days=days),
            Reading.measured_at < end,
        )
    )
    return compute([(t, v, o) for t, v, o in rows.all()], days=days)
