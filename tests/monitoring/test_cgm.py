"""CGM consensus metrics: data sufficiency (14 days, 70 % wear) and the metric definitions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from telecare.monitoring.cgm import compute, gmi_percent

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def series(days: float, every_min: float, values: list[float]) -> list[tuple[datetime, float, int]]:
    n = int(days * 1440 / every_min)
    return [(T0 + timedelta(minutes=every_min * i), values[i % len(values)], -300) for i in range(n)]


def test_sufficient_data_gives_the_consensus_metrics() -> None:
    values = [50, 60, 100, 150, 200, 260, 120, 110, 130, 140]
    report = compute(series(14, 5, values), days=14)
    assert report.sufficient
    m = report.metrics
    assert m["time_below_54"] == 10.0
    assert m["time_below_70"] == 20.0
    assert m["time_in_range_70_180"] == 60.0
    assert m["time_above_180"] == 20.0
    assert m["time_above_250"] == 10.0
    assert m["mean_glucose"] == 132.0
    assert m["gmi"] == round(gmi_percent(132.0), 1) == 6.5  # 3.31 + 0.02392 x 132
    assert m["cv"] == pytest.approx(44.8, abs=0.1)  # population SD 59.13 / mean 132
    assert len(report.agp) == 24
    assert {"p5", "p25", "p50", "p75", "p95"} <= set(report.agp[0])


@pytest.mark.parametrize(
    ("days", "wear_fraction", "sufficient"),
    [(14, 0.70, True), (14, 0.69, False), (13, 1.0, False)],
)
def test_data_sufficiency_edges(days: int, wear_fraction: float, sufficient: bool) -> None:
    full = series(days, 5, [120])
    keep = math.ceil(len(full) * wear_fraction)
    # a gap (sensor off) keeps the 5-minute cadence of the rest
    report = compute(full[:keep], days=days)
    assert report.sufficient is sufficient
    assert (report.metrics == {}) is (not sufficient)
    if not sufficient:
        assert report.reason
