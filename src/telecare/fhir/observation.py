"""Observation <-> reading mapping (FHIR R4 core vital-signs profile; US Core pulse oximetry; HL7 CGM IG).

Incoming resources are checked here with plain code (fast): required elements, the LOINC code, UCUM units and
the `status` binding (fhir.resources does not check required bindings, docs/fhir.md#validation)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from telecare.core.errors import FieldError
from telecare.core.params import MAX_ID
from telecare.identity.models import Patient
from telecare.monitoring.codes import (
    KIND_BY_LOINC,
    LOINC,
    LOINC_BP_PANEL,
    LOINC_CGM_MOLES,
    LOINC_DIASTOLIC_BP,
    LOINC_PULSE_OX,
    LOINC_SPO2,
    LOINC_SYSTOLIC_BP,
    SPECS,
    UCUM,
    Kind,
)
from telecare.monitoring.ingest import check_time, normalise_values
from telecare.monitoring.models import Reading
from telecare.monitoring.service import Draft

MRN_SYSTEM = "https://telecare.dev/sid/mrn"
READING_ID_SYSTEM = "https://telecare.dev/sid/device-reading-id"
DEVICE_ID_SYSTEM = "https://telecare.dev/sid/device"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
VITALS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"
PULSE_OX_PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-pulse-oximetry"
ACCEPTED_STATUS = frozenset({"final", "amended", "corrected", "preliminary"})
# [0-9], not \d: \d also matches other scripts' digits, which int() and fromisoformat() then refuse.
_DATETIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_PATIENT_REF = re.compile(r"^(?:.*/)?Patient/([0-9]{1,10})$")


def parse_instant(text: str) -> datetime | None:
    """A FHIR dateTime that matched its pattern, or None when it names no real instant (month 13, 25:00)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def patient_ref_id(reference: str) -> int | None:
    """The id of `Patient/{id}` (or a full URL ending so), within the id range (core/params.py)."""
    match = _PATIENT_REF.match(reference)
    if match is None or not 1 <= int(match.group(1)) <= MAX_ID:
        return None
    return int(match.group(1))


def _codes(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return []
    return [
        str(c["code"]) for c in codings if isinstance(c, dict) and c.get("system") == LOINC and c.get("code")
    ]


def _quantity(prefix: str, q: Any) -> tuple[float | None, str | None, list[FieldError]]:
    if not isinstance(q, dict):
        return None, None, [FieldError(prefix, "required")]
    value = q.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None, None, [FieldError(f"{prefix}.value", "must be a number")]
    unit = q.get("code") if q.get("system") == UCUM and q.get("code") else q.get("unit") or q.get("code")
    if not isinstance(unit, str) or not unit:
        return None, None, [FieldError(f"{prefix}.code", "UCUM unit required")]
    return float(value), unit, []


def parse_observation(index: int, prefix: str, obs: Any) -> Draft | list[FieldError]:
    """A Draft reading from an Observation, or errors naming the element (`prefix` + FHIRPath-ish)."""
    if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
        return [FieldError(f"{prefix}resourceType", "must be Observation")]
    errors: list[FieldError] = []
    if obs.get("status") not in ACCEPTED_STATUS:
        errors.append(FieldError(f"{prefix}status", f"must be one of {', '.join(sorted(ACCEPTED_STATUS))}"))
    codes = _codes(obs.get("code"))
    kinds = {KIND_BY_LOINC[c] for c in codes if c in KIND_BY_LOINC}
    if len(kinds) != 1:
        errors.append(FieldError(f"{prefix}code", "one supported LOINC vital-sign or glucose code required"))
        return errors
    kind = kinds.pop()
    effective = obs.get("effectiveDateTime")
    measured_at: datetime | None = None
    if isinstance(effective, str) and _DATETIME.match(effective):
        measured_at = parse_instant(effective)
    if measured_at is None:
        errors.append(FieldError(f"{prefix}effectiveDateTime", "a date-time with a UTC offset is required"))
    else:
        errors += check_time(prefix, measured_at)
        errors = [FieldError(e.field.replace("measured_at", "effectiveDateTime"), e.message) for e in errors]
    patient_id = None
    subject = obs.get("subject")
    if subject is not None:
        ref = subject.get("reference") if isinstance(subject, dict) else None
        patient_id = patient_ref_id(ref) if isinstance(ref, str) else None
        if patient_id is None:
            errors.append(FieldError(f"{prefix}subject.reference", "must be Patient/{id}"))
    serial = None
    device = obs.get("device")
    if device is not None:
        ident = device.get("identifier") if isinstance(device, dict) else None
        serial = ident.get("value") if isinstance(ident, dict) else None
        if not isinstance(serial, str) or not serial.strip():
            errors.append(
                FieldError(f"{prefix}device.identifier.value", "the device serial number is required")
            )
            serial = None
    reading_id = None
    identifiers = obs.get("identifier")
    if isinstance(identifiers, list) and identifiers and isinstance(identifiers[0], dict):
        value = identifiers[0].get("value")
        reading_id = str(value)[:100] if value is not None else None
    values: Any
    if kind is Kind.BLOOD_PRESSURE:
        raw_comps = obs.get("component")
        comps: list[Any] = raw_comps if isinstance(raw_comps, list) else []
        found: dict[str, tuple[float | None, str | None]] = {}
        for n, comp in enumerate(comps):
            for code in _codes(comp.get("code") if isinstance(comp, dict) else None):
                if code in (LOINC_SYSTOLIC_BP, LOINC_DIASTOLIC_BP):
                    v, u, errs = _quantity(f"{prefix}component[{n}].valueQuantity", comp.get("valueQuantity"))
                    errors += errs
                    found[code] = (v, u)
        if LOINC_SYSTOLIC_BP not in found or LOINC_DIASTOLIC_BP not in found:
            errors.append(
                FieldError(
                    f"{prefix}component", "systolic (8480-6) and diastolic (8462-4) components required"
                )
            )
            return errors
        bp_unit = found[LOINC_SYSTOLIC_BP][1] or "mm[Hg]"
        values = normalise_values(
            prefix,
            kind,
            bp_unit,
            value=None,
            systolic=found[LOINC_SYSTOLIC_BP][0],
            diastolic=found[LOINC_DIASTOLIC_BP][0],
        )
        if isinstance(values, list):
            values = [
                FieldError(
                    e.field.replace("systolic", "component[8480-6]").replace(
                        "diastolic", "component[8462-4]"
                    ),
                    e.message,
                )
                for e in values
            ]
    else:
        v, unit, errs = _quantity(f"{prefix}valueQuantity", obs.get("valueQuantity"))
        errors += errs
        if v is None or unit is None:
            return errors
        if LOINC_CGM_MOLES in codes and unit != "mmol/L":
            errors.append(FieldError(f"{prefix}valueQuantity.code", "105272-9 is reported in mmol/L"))
        values = normalise_values(prefix, kind, unit, value=v)
        if isinstance(values, list):
            values = [
                FieldError(
                    prefix
                    + {"value": "valueQuantity.value", "unit": "valueQuantity.code"}.get(
                        e.field.removeprefix(prefix), e.field.removeprefix(prefix)
                    ),
                    e.message,
                )
                for e in values
            ]
    if isinstance(values, list):
        errors += values
    if errors or measured_at is None or isinstance(values, list):
        return errors
    return Draft(
        index,
        prefix,
        kind,
        values,
        measured_at,
        device_serial=serial,
        patient_id=patient_id,
        device_reading_id=reading_id,
    )


def _quantity_out(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(value, 2), "unit": unit, "system": UCUM, "code": unit}


def _coding(code: str, display: str) -> dict[str, Any]:
    return {"system": LOINC, "code": code, "display": display}


def observation_resource(r: Reading) -> dict[str, Any]:
    """A stored reading as an R4 Observation (vital-signs profile; pulse oximetry carries both 59408-5
    and 2708-6)."""
    kind = Kind(r.kind)
    spec = SPECS[kind]
    local = r.measured_at.astimezone(timezone(timedelta(minutes=r.utc_offset_minutes)))
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(r.id),
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": CATEGORY_SYSTEM,
                        "code": spec.category,
                        "display": {
                            "vital-signs": "Vital Signs",
                            "laboratory": "Laboratory",
                            "activity": "Activity",
                        }[spec.category],
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{r.patient_id}"},
        "effectiveDateTime": local.isoformat(),
        "issued": r.received_at.isoformat(),
    }
    if spec.category == "vital-signs":
        out["meta"] = {"profile": [BP_PROFILE if kind is Kind.BLOOD_PRESSURE else VITALS_PROFILE]}
    if kind is Kind.SPO2:
        out["meta"]["profile"].append(PULSE_OX_PROFILE)
        out["code"] = {
            "coding": [
                _coding(LOINC_SPO2, "Oxygen saturation in Arterial blood"),
                _coding(LOINC_PULSE_OX, "Oxygen saturation in Arterial blood by Pulse oximetry"),
            ]
        }
    else:
        out["code"] = {"coding": [_coding(spec.code, spec.display)], "text": spec.display}
    if kind is Kind.BLOOD_PRESSURE:
        out["component"] = [
            {
                "code": {"coding": [_coding(LOINC_SYSTOLIC_BP, "Systolic blood pressure")]},
                "valueQuantity": _quantity_out(r.value, r.unit),
            },
            {
                "code": {"coding": [_coding(LOINC_DIASTOLIC_BP, "Diastolic blood pressure")]},
                "valueQuantity": _quantity_out(r.value2 or 0.0, r.unit),
            },
        ]
    else:
        out["valueQuantity"] = _quantity_out(r.value, r.unit)
    if r.device_reading_id:
        out["identifier"] = [{"system": READING_ID_SYSTEM, "value": r.device_reading_id}]
    if r.device_id is not None:
        # No Device endpoint yet: identify the device without a reference that would not resolve.
        out["device"] = {"identifier": {"system": DEVICE_ID_SYSTEM, "value": str(r.device_id)}}
    if r.note:
        out["note"] = [{"text": r.note}]
    return out


def patient_resource(p: Patient) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(p.id),
        "identifier": [{"system": MRN_SYSTEM, "value": p.mrn}],
        "name": [{"family": p.family_name, "given": [p.given_name]}],
        "gender": str(p.sex),
        "birthDate": p.birth_date.isoformat(),
        "address": [{"state": p.state, **({"city": p.city} if p.city else {})}],
    }
    telecom = []
    if p.phone:
        telecom.append({"system": "phone", "value": p.phone})
    if p.email:
        telecom.append({"system": "email", "value": p.email})
    if telecom:
        out["telecom"] = telecom
    return out


def loinc_for(kind: Kind) -> str:
    return SPECS[kind].code


def codes_matching(code: str) -> list[str]:
    """Readings whose stored code answers a search for `code` (59408-5 finds SpO2 stored as 2708-6)."""
    if code == LOINC_PULSE_OX:
        return [LOINC_SPO2]
    if code == LOINC_CGM_MOLES:
        return [SPECS[Kind.CGM].code]
    if code in (LOINC_SYSTOLIC_BP, LOINC_DIASTOLIC_BP):
        return [LOINC_BP_PANEL]
    return [code]
