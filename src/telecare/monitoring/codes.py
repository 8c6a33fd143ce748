"""Reading kinds, their LOINC codes and UCUM units, unit conversion and plausibility limits.

Codes and units: docs/fhir.md#vital-signs (FHIR core vital-signs profile, US Core pulse oximetry, HL7 CGM IG
1.0.0). Every reading is stored in one canonical UCUM unit per kind, with the value and unit as received."""

from __future__ import annotations

import enum
from dataclasses import dataclass

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

LOINC_BP_PANEL = "85354-9"  # Blood pressure panel with all children optional
LOINC_SYSTOLIC_BP = "8480-6"  # Systolic blood pressure
LOINC_DIASTOLIC_BP = "8462-4"  # Diastolic blood pressure
LOINC_HEART_RATE = "8867-4"  # Heart rate
LOINC_RESP_RATE = "9279-1"  # Respiratory rate
LOINC_BODY_TEMP = "8310-5"  # Body temperature
LOINC_BODY_WEIGHT = "29463-7"  # Body weight
LOINC_SPO2 = "2708-6"  # Oxygen saturation in Arterial blood
LOINC_PULSE_OX = "59408-5"  # Oxygen saturation in Arterial blood by Pulse oximetry (US Core slice)
LOINC_GLUCOSE_BLOOD = "2339-0"  # Glucose [Mass/volume] in Blood
LOINC_GLUCOSE_METER = "41653-7"  # Glucose [Mass/volume] in Capillary blood by Glucometer
LOINC_CGM_MASS = "99504-3"  # Glucose [Mass/volume] in Interstitial fluid (HL7 CGM IG)
LOINC_CGM_MOLES = "105272-9"  # Glucose [Moles/volume] in Interstitial fluid (HL7 CGM IG)
LOINC_STEPS = "41950-7"  # Number of steps in 24 hour Measured

# Glucose molar mass 180.156 g/mol: 1 mmol/L = 18.0156 mg/dL (so 3.9 mmol/L ~ 70 mg/dL,
# docs/rpm.md#alert-thresholds).
MG_DL_PER_MMOL_L = 18.0156
KG_PER_LB = 0.45359237  # international avoirdupois pound, exact
MMHG_PER_KPA = 7.50062


class Kind(enum.StrEnum):
    BLOOD_PRESSURE = "blood_pressure"
    HEART_RATE = "heart_rate"
    SPO2 = "spo2"
    GLUCOSE = "glucose"  # meter (capillary) or lab blood glucose
    CGM = "cgm"  # continuous glucose monitor sensor reading
    WEIGHT = "weight"
    TEMPERATURE = "temperature"
    RESPIRATORY_RATE = "respiratory_rate"
    STEPS = "steps"


class Program(enum.StrEnum):
    """RPM programs a patient is enrolled in (worklist filters; COPD changes the SpO2 target)."""

    HYPERTENSION = "hypertension"
    DIABETES = "diabetes"
    HEART_FAILURE = "heart_failure"
    COPD = "copd"


@dataclass(frozen=True)
class KindSpec:
    kind: Kind
    code: str  # LOINC of the stored reading
    display: str
    unit: str  # canonical UCUM unit
    low: float  # plausibility: below this the device or the entry is wrong
    high: float
    category: str = "vital-signs"


# Plausibility limits: values outside are physiologically impossible or a device fault (a systolic of 900,
# an SpO2 of 130). They are wide on purpose: alerting, not plausibility, handles the dangerous-but-real.
SPECS: dict[Kind, KindSpec] = {
    Kind.BLOOD_PRESSURE: KindSpec(Kind.BLOOD_PRESSURE, LOINC_BP_PANEL, "Blood pressure", "mm[Hg]", 20, 300),
    Kind.HEART_RATE: KindSpec(Kind.HEART_RATE, LOINC_HEART_RATE, "Heart rate", "/min", 20, 300),
    Kind.SPO2: KindSpec(Kind.SPO2, LOINC_SPO2, "Oxygen saturation", "%", 50, 100),
    Kind.GLUCOSE: KindSpec(
        Kind.GLUCOSE, LOINC_GLUCOSE_METER, "Glucose (meter)", "mg/dL", 10, 1000, "laboratory"
    ),
    Kind.CGM: KindSpec(Kind.CGM, LOINC_CGM_MASS, "Glucose (CGM)", "mg/dL", 10, 1000, "laboratory"),
    Kind.WEIGHT: KindSpec(Kind.WEIGHT, LOINC_BODY_WEIGHT, "Body weight", "kg", 1, 500),
    Kind.TEMPERATURE: KindSpec(Kind.TEMPERATURE, LOINC_BODY_TEMP, "Body temperature", "Cel", 25, 45),
    Kind.RESPIRATORY_RATE: KindSpec(
        Kind.RESPIRATORY_RATE, LOINC_RESP_RATE, "Respiratory rate", "/min", 2, 80
    ),
    Kind.STEPS: KindSpec(Kind.STEPS, LOINC_STEPS, "Steps", "/d", 0, 100_000, "activity"),
}
SYSTOLIC_RANGE = (40.0, 300.0)
DIASTOLIC_RANGE = (20.0, 200.0)

# Codes accepted on the FHIR door, mapped to a kind.
KIND_BY_LOINC: dict[str, Kind] = {
    LOINC_BP_PANEL: Kind.BLOOD_PRESSURE,
    LOINC_HEART_RATE: Kind.HEART_RATE,
    LOINC_SPO2: Kind.SPO2,
    LOINC_PULSE_OX: Kind.SPO2,
    LOINC_GLUCOSE_BLOOD: Kind.GLUCOSE,
    LOINC_GLUCOSE_METER: Kind.GLUCOSE,
    LOINC_CGM_MASS: Kind.CGM,
    LOINC_CGM_MOLES: Kind.CGM,
    LOINC_BODY_WEIGHT: Kind.WEIGHT,
    LOINC_BODY_TEMP: Kind.TEMPERATURE,
    LOINC_RESP_RATE: Kind.RESPIRATORY_RATE,
    LOINC_STEPS: Kind.STEPS,
}

# Spellings devices actually send, mapped to UCUM (the UCUM code itself is always accepted).
UNIT_ALIASES = {
    "mmhg": "mm[Hg]",
    "mm[hg]": "mm[Hg]",
    "kpa": "kPa",
    "bpm": "/min",
    "/min": "/min",
    "1/min": "/min",
    "beats/min": "/min",
    "breaths/min": "/min",
    "%": "%",
    "percent": "%",
    "mg/dl": "mg/dL",
    "mmol/l": "mmol/L",
    "kg": "kg",
    "g": "g",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "[lb_av]": "[lb_av]",
    "cel": "Cel",
    "c": "Cel",
    "°c": "Cel",
    "degc": "Cel",
    "[degf]": "[degF]",
    "f": "[degF]",
    "°f": "[degF]",
    "degf": "[degF]",
    "/d": "/d",
    "{steps}/d": "/d",
    "/(24.h)": "/d",
    "steps": "/d",
}

# (kind, UCUM unit) -> function to the canonical unit
_CONVERT = {
    (Kind.BLOOD_PRESSURE, "mm[Hg]"): lambda v: v,
    (Kind.BLOOD_PRESSURE, "kPa"): lambda v: v * MMHG_PER_KPA,
    (Kind.HEART_RATE, "/min"): lambda v: v,
    (Kind.RESPIRATORY_RATE, "/min"): lambda v: v,
    (Kind.SPO2, "%"): lambda v: v,
    (Kind.GLUCOSE, "mg/dL"): lambda v: v,
    (Kind.GLUCOSE, "mmol/L"): lambda v: v * MG_DL_PER_MMOL_L,
    (Kind.CGM, "mg/dL"): lambda v: v,
    (Kind.CGM, "mmol/L"): lambda v: v * MG_DL_PER_MMOL_L,
    (Kind.WEIGHT, "kg"): lambda v: v,
    (Kind.WEIGHT, "g"): lambda v: v / 1000.0,
    (Kind.WEIGHT, "[lb_av]"): lambda v: v * KG_PER_LB,
    (Kind.TEMPERATURE, "Cel"): lambda v: v,
    (Kind.TEMPERATURE, "[degF]"): lambda v: (v - 32.0) * 5.0 / 9.0,
    (Kind.STEPS, "/d"): lambda v: v,
}


class UnitError(ValueError):
    pass


def ucum(unit: str) -> str:
    """The UCUM code for a unit as a device spells it."""
    return UNIT_ALIASES.get(unit.strip().lower(), unit.strip())


def to_canonical(kind: Kind, value: float, unit: str) -> float:
    """Convert `value` in `unit` to the kind's canonical unit; UnitError names what is accepted."""
    fn = _CONVERT.get((kind, ucum(unit)))
    if fn is None:
        accepted = sorted(u for k, u in _CONVERT if k is kind)
        raise UnitError(f"unit not accepted for {kind}; use one of {', '.join(accepted)}")
    return round(float(fn(value)), 4)


def units_for(kind: Kind) -> list[str]:
    return sorted(u for k, u in _CONVERT if k is kind)


def from_canonical(kind: Kind, value: float, unit: str) -> float:
    """Convert a canonical value to another accepted unit (charts in lb or degF)."""
    target = ucum(unit)
    if (kind, target) not in _CONVERT:
        raise UnitError(f"unit not accepted for {kind}")
    one = _CONVERT[(kind, target)](1.0)
    zero = _CONVERT[(kind, target)](0.0)
    return float((value - zero) / (one - zero))
