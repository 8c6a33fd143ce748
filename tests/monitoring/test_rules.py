"""Every default rule at its edges, program targets and override versions (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telecare.monitoring.codes import KG_PER_LB, Kind
from telecare.monitoring.rules import (
    RULES_BY_CODE,
    OverrideVersion,
    effective_rule,
    threshold_hit,
    weight_gain_hit,
)

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def fires(
    code: str, kind: Kind, value: float, value2: float | None = None, programs: tuple[str, ...] = ()
) -> bool:
    rule, _ = effective_rule(RULES_BY_CODE[code], programs, [], T0)
    return threshold_hit(rule, kind, value, value2, "u") is not None


@pytest.mark.parametrize(
    ("code", "kind", "value", "value2", "expected"),
    [
        # BP crisis: SBP > 180 and/or DBP > 120 (ACC/AHA)
        ("bp_crisis", Kind.BLOOD_PRESSURE, 180, 100, False),
        ("bp_crisis", Kind.BLOOD_PRESSURE, 181, 100, True),
        ("bp_crisis", Kind.BLOOD_PRESSURE, 170, 120, False),
        ("bp_crisis", Kind.BLOOD_PRESSURE, 170, 121, True),
        # hypotension: SBP < 90 or DBP < 60
        ("bp_low", Kind.BLOOD_PRESSURE, 90, 60, False),
        ("bp_low", Kind.BLOOD_PRESSURE, 89, 60, True),
        ("bp_low", Kind.BLOOD_PRESSURE, 100, 59, True),
        # glucose lows: level 1 < 70, level 2 < 54 (ADA Table 6.3)
        ("glucose_low_l1", Kind.GLUCOSE, 70, None, False),
        ("glucose_low_l1", Kind.GLUCOSE, 69, None, True),
        ("glucose_low_l2", Kind.CGM, 54, None, False),
        ("glucose_low_l2", Kind.CGM, 53, None, True),
        # glucose highs: > 250 level 2 (TIR consensus), > 300 escalation
        ("glucose_high_l2", Kind.CGM, 250, None, False),
        ("glucose_high_l2", Kind.CGM, 251, None, True),
        ("glucose_high_300", Kind.GLUCOSE, 300, None, False),
        ("glucose_high_300", Kind.GLUCOSE, 301, None, True),
        # SpO2 below 90 %
        ("spo2_low", Kind.SPO2, 90, None, False),
        ("spo2_low", Kind.SPO2, 89, None, True),
        # heart rate < 50 or > 120
        ("hr_low", Kind.HEART_RATE, 50, None, False),
        ("hr_low", Kind.HEART_RATE, 49, None, True),
        ("hr_high", Kind.HEART_RATE, 120, None, False),
        ("hr_high", Kind.HEART_RATE, 121, None, True),
        # fever >= 38.0 Cel (100.4 degF)
        ("fever", Kind.TEMPERATURE, 37.9, None, False),
        ("fever", Kind.TEMPERATURE, 38.0, None, True),
    ],
)
def test_threshold_edges(code: str, kind: Kind, value: float, value2: float | None, expected: bool) -> None:
    assert fires(code, kind, value, value2) is expected


def test_copd_program_moves_the_spo2_target_to_88() -> None:
    assert fires("spo2_low", Kind.SPO2, 89)
    assert not fires("spo2_low", Kind.SPO2, 89, programs=("copd",))
    assert not fires("spo2_low", Kind.SPO2, 88, programs=("copd",))
    assert fires("spo2_low", Kind.SPO2, 87, programs=("copd",))


def test_fever_in_fahrenheit_edge() -> None:
    from telecare.monitoring.codes import to_canonical

    assert fires("fever", Kind.TEMPERATURE, to_canonical(Kind.TEMPERATURE, 100.4, "[degF]"))
    assert not fires("fever", Kind.TEMPERATURE, to_canonical(Kind.TEMPERATURE, 100.3, "[degF]"))


@pytest.mark.parametrize(
    ("code", "gain_lb", "hours_before", "expected"),
    [
        ("weight_gain_day", 3.0, 20, False),  # exactly 3 lb is not "more than 3 lb"
        ("weight_gain_day", 3.2, 20, True),
        ("weight_gain_day", 3.2, 25, False),  # outside the one-day window
        ("weight_gain_week", 5.0, 150, False),
        ("weight_gain_week", 5.2, 150, True),
        ("weight_gain_week", 5.2, 170, False),
    ],
)
def test_weight_gain_edges(code: str, gain_lb: float, hours_before: float, expected: bool) -> None:
    rule = RULES_BY_CODE[code]
    base = 180 * KG_PER_LB
    history = [(T0 - timedelta(hours=hours_before), round(base, 4))]
    now_kg = round((180 + gain_lb) * KG_PER_LB, 4)
    assert (weight_gain_hit(rule, T0, now_kg, history) is not None) is expected


def test_override_in_force_at_the_measured_time_applies() -> None:
    v1 = OverrideVersion("spo2_low", {"below": 88}, None, True, T0, T0 + timedelta(days=1))
    v2 = OverrideVersion("spo2_low", {"below": 85}, 10, True, T0 + timedelta(days=1), None)
    rule = RULES_BY_CODE["spo2_low"]
    before, o = effective_rule(rule, [], [v1, v2], T0 - timedelta(hours=1))
    assert before.params["below"] == 90
    assert o is None
    during, _ = effective_rule(rule, [], [v1, v2], T0 + timedelta(hours=1))
    assert during.params["below"] == 88
    after, chosen = effective_rule(rule, [], [v1, v2], T0 + timedelta(days=2))
    assert after.params["below"] == 85
    assert after.confirm_minutes == 10
    assert chosen is v2


@given(threshold=st.floats(50, 100), value=st.floats(50, 100))
def test_below_rules_fire_exactly_below_the_threshold(threshold: float, value: float) -> None:
    v = OverrideVersion("spo2_low", {"below": threshold}, None, True, T0 - timedelta(days=1), None)
    rule, _ = effective_rule(RULES_BY_CODE["spo2_low"], [], [v], T0)
    assert (threshold_hit(rule, Kind.SPO2, value, None, "%") is not None) is (value < threshold)
