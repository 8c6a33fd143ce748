"""The default RPM alert rules and their pure evaluation (no database here).

Numbers and sources: docs/rpm.md#alert-thresholds. Every rule can be changed per patient
(ThresholdOverride); an enrolment in the COPD program moves the SpO2 target (BTS 2017)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from telecare.monitoring.codes import KG_PER_LB, Kind, Program
from telecare.monitoring.models import Tier

# How long each tier may stay unacknowledged before it escalates to the patient's physician. Program
# choices (docs/rpm.md#alert-tiers: the sources name the tiers, not the minutes): immediate = the
# 911-advice call, 15 minutes.
TIER_DEADLINE: dict[Tier, timedelta | None] = {
    Tier.IMMEDIATE: timedelta(minutes=15),
    Tier.SAME_DAY: timedelta(hours=4),
    Tier.WITHIN_24H: timedelta(hours=24),
    Tier.INFO: None,
}

MISSING_DATA = "missing_data"
# Weights are stored in kg rounded to 0.1 g, so a gain of exactly 3.0 lb can read 0.05 g above 3 lb: gains
# within 1 g of the limit count as "not more than" (clinically nothing).
EPS_KG = 0.001


@dataclass(frozen=True)
class Rule:
    code: str
    title: str
    kinds: frozenset[Kind]
    tier: Tier
    params: dict[str, float]
    source: str
    group: str = ""  # within a group only the most severe qualifying rule fires (listed first)
    confirm_minutes: int | None = None
    enabled: bool = True
    check: str = "threshold"  # threshold | weight_gain | missing_data
    program_params: dict[Program, dict[str, float]] = field(default_factory=dict)


GLUCOSE_KINDS = frozenset({Kind.GLUCOSE, Kind.CGM})

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        "bp_crisis",
        "Blood pressure in crisis range",
        frozenset({Kind.BLOOD_PRESSURE}),
        Tier.IMMEDIATE,
        {"systolic_above": 180, "diastolic_above": 120},
        # AHA/ACC: crisis is SBP > 180 and/or DBP > 120 (2017 ACC/AHA guideline, Whelton, Hypertension
        # 2018;71:1269; kept by the 2025 guideline). With symptoms: 911/ED.
        "2017 ACC/AHA hypertension guideline (docs/rpm.md#alert-thresholds)",
        group="bp_high",
    ),
    Rule(
        "bp_low",
        "Low blood pressure",
        frozenset({Kind.BLOOD_PRESSURE}),
        Tier.SAME_DAY,
        {"systolic_below": 90, "diastolic_below": 60},
        # No single guideline threshold; SBP < 90 or DBP < 60 (Healio/Osmosis, secondary). A repeat within
        # 15 minutes must confirm it: cuff errors and one-off postural drops are common.
        "Healio/Osmosis hypotension definition, secondary (docs/rpm.md#alert-thresholds)",
        group="bp_low",
        confirm_minutes=15,
    ),
    Rule(
        "glucose_low_l2",
        "Glucose level 2 low (< 54 mg/dL)",
        GLUCOSE_KINDS,
        Tier.IMMEDIATE,
        {"below": 54},
        "ADA Standards of Care, Glycemic Targets, Table 6.3: level 2 < 54 mg/dL (3.0 mmol/L)",
        group="glucose_low",
    ),
    Rule(
        "glucose_low_l1",
        "Glucose level 1 low (< 70 mg/dL)",
        GLUCOSE_KINDS,
        Tier.SAME_DAY,
        {"below": 70},
        "ADA Standards of Care, Glycemic Targets, Table 6.3: level 1 < 70 mg/dL (3.9 mmol/L)",
        group="glucose_low",
    ),
    Rule(
        "glucose_high_300",
        "Glucose above 300 mg/dL",
        GLUCOSE_KINDS,
        Tier.SAME_DAY,
        {"above": 300},
        # A common escalation / ketone-check trigger; no guideline source found
        # (docs/rpm.md#alert-thresholds, unverified).
        "Program escalation trigger > 300 mg/dL (unverified, docs/rpm.md#alert-thresholds)",
        group="glucose_high",
    ),
    Rule(
        "glucose_high_l2",
        "Glucose level 2 high (> 250 mg/dL)",
        GLUCOSE_KINDS,
        Tier.WITHIN_24H,
        {"above": 250},
        "International Consensus on Time in Range (Battelino, Diabetes Care 2019;42:1593): TAR level 2 > 250",
        group="glucose_high",
    ),
    Rule(
        "spo2_low",
        "Oxygen saturation below target",
        frozenset({Kind.SPO2}),
        Tier.SAME_DAY,
        # General target 94-98 %, alert below 90 % (the exact RPM cut-off is a program choice); COPD or
        # hypercapnic risk: target 88-92 %, alert below 88 % (BTS oxygen guideline 2017, Thorax 72 Suppl 1).
        {"below": 90},
        "BTS emergency oxygen guideline 2017 (docs/rpm.md#alert-thresholds)",
        group="spo2",
        program_params={Program.COPD: {"below": 88}},
    ),
    Rule(
        "weight_gain_day",
        "Weight gain over a day (heart failure)",
        frozenset({Kind.WEIGHT}),
        Tier.SAME_DAY,
        # > 3 lb in 1 day -> call the provider (Allina Health; MedStar uses 2 lb: sources vary, so it is
        # configurable per patient)
        {"gain_kg_above": round(3 * KG_PER_LB, 6), "window_hours": 24},
        "Allina Health HF education: > 3 lb in 1 day (docs/rpm.md#alert-thresholds)",
        group="weight_day",
        check="weight_gain",
    ),
    Rule(
        "weight_gain_week",
        "Weight gain over a week (heart failure)",
        frozenset({Kind.WEIGHT}),
        Tier.SAME_DAY,
        {"gain_kg_above": round(5 * KG_PER_LB, 6), "window_hours": 168},
        "Allina Health / VHF clinic HF education: > 5 lb in 1 week (docs/rpm.md#alert-thresholds)",
        group="weight_week",
        check="weight_gain",
    ),
    Rule(
        "hr_high",
        "Heart rate above 120/min",
        frozenset({Kind.HEART_RATE}),
        Tier.SAME_DAY,
        {"above": 120},
        "Program alert > 120 bpm (resting normal 60-100; unverified, docs/rpm.md#alert-thresholds)",
        group="hr_high",
    ),
    Rule(
        "hr_low",
        "Heart rate below 50/min",
        frozenset({Kind.HEART_RATE}),
        Tier.SAME_DAY,
        {"below": 50},
        "Program alert < 50 bpm (unverified, docs/rpm.md#alert-thresholds)",
        group="hr_low",
    ),
    Rule(
        "fever",
        "Fever (>= 38.0 Cel / 100.4 degF)",
        frozenset({Kind.TEMPERATURE}),
        Tier.WITHIN_24H,
        {"at_or_above": 38.0},
        "Fever >= 38.0 Cel / 100.4 degF (unverified, docs/rpm.md#alert-thresholds)",
        group="fever",
    ),
    Rule(
        MISSING_DATA,
        "No readings received",
        frozenset(Kind),
        Tier.INFO,
        {"days": 3},
        "Program rule: no reading for N days (configurable)",
        group=MISSING_DATA,
        check="missing_data",
    ),
)
RULES_BY_CODE = {r.code: r for r in DEFAULT_RULES}


@dataclass(frozen=True)
class OverrideVersion:
    rule_code: str
    params: dict[str, Any]
    confirm_minutes: int | None
    enabled: bool
    effective_from: datetime
    effective_to: datetime | None
    reason: str = ""
    set_by_user_id: int | None = None


def effective_rule(
    rule: Rule, programs: Iterable[str], overrides: Sequence[OverrideVersion], at: datetime
) -> tuple[Rule, OverrideVersion | None]:
    """The rule as it applied to a patient at `at`: defaults, then program, then the override in force."""
    params = dict(rule.params)
    for program in programs:
        params.update(rule.program_params.get(Program(program), {}))
    chosen = None
    for version in overrides:
        if (
            version.rule_code == rule.code
            and version.effective_from <= at
            and (version.effective_to is None or at < version.effective_to)
        ):
            chosen = version
    if chosen is None:
        return replace(rule, params=params), None
    params.update({k: float(v) for k, v in chosen.params.items()})
    return (
        replace(
            rule,
            params=params,
            enabled=chosen.enabled,
            confirm_minutes=chosen.confirm_minutes
            if chosen.confirm_minutes is not None
            else rule.confirm_minutes,
        ),
        chosen,
    )


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def threshold_hit(rule: Rule, kind: Kind, value: float, value2: float | None, unit: str) -> str | None:
    """Why a single reading qualifies for a threshold rule (a detail without names), or None."""
    p = rule.params
    if kind is Kind.BLOOD_PRESSURE:
        dia = value2 if value2 is not None else 0.0
        parts = []
        if "systolic_above" in p and value > p["systolic_above"]:
            parts.append(f"systolic {_fmt(value)} > {_fmt(p['systolic_above'])}")
        if "diastolic_above" in p and dia > p["diastolic_above"]:
            parts.append(f"diastolic {_fmt(dia)} > {_fmt(p['diastolic_above'])}")
        if "systolic_below" in p and value < p["systolic_below"]:
            parts.append(f"systolic {_fmt(value)} < {_fmt(p['systolic_below'])}")
        if "diastolic_below" in p and value2 is not None and dia < p["diastolic_below"]:
            parts.append(f"diastolic {_fmt(dia)} < {_fmt(p['diastolic_below'])}")
        return f"{', '.join(parts)} {unit}" if parts else None
    if "above" in p and value > p["above"]:
        return f"{_fmt(value)} > {_fmt(p['above'])} {unit}"
    if "at_or_above" in p and value >= p["at_or_above"]:
        return f"{_fmt(value)} >= {_fmt(p['at_or_above'])} {unit}"
    if "below" in p and value < p["below"]:
        return f"{_fmt(value)} < {_fmt(p['below'])} {unit}"
    return None


def weight_gain_hit(
    rule: Rule, at: datetime, value: float, history: Sequence[tuple[datetime, float]]
) -> str | None:
    """Gain of `value` over the lowest weight in the rule's window before `at` (history: (time, kg))."""
    window = timedelta(hours=rule.params["window_hours"])
    prior = [kg for t, kg in history if at - window <= t < at]
    if not prior:
        return None
    gain = value - min(prior)
    if gain > rule.params["gain_kg_above"] + EPS_KG:
        hours = int(rule.params["window_hours"])
        return f"+{gain:.2f} kg ({gain / KG_PER_LB:.1f} lb) within {hours} h"
    return None
