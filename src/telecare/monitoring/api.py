"""REST routes for remote patient monitoring (thin: each calls one service function)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.errors import FieldError, ValidationFailed
from telecare.core.params import BoundedId, PathId
from telecare.monitoring import billing, care, cgm, repository, service
from telecare.monitoring import devices as device_registry
from telecare.monitoring.codes import Kind
from telecare.monitoring.credentials import IngestCaller
from telecare.monitoring.ingest import StoreResult
from telecare.monitoring.schemas import (
    AlertNote,
    AlertRead,
    AssignmentCreate,
    BatchResult,
    BillingRowRead,
    DeviceCreate,
    DeviceKeyCreated,
    DeviceRead,
    EnrolmentCreate,
    EnrolmentRead,
    ManualReading,
    OverrideSet,
    ReadingRead,
    RuleRead,
    TimeEntryCreate,
    TimeEntryRead,
)

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])

_BATCH_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "maxItems": 10000,
                    "items": {"$ref": "#/components/schemas/NativeReading"},
                }
            }
        },
    }
}


def batch_response(result: StoreResult, received: int) -> Response:
    """The BatchResult document, built without per-item models (10,000 items per request)."""
    created, duplicates, rejected = (result.count(s) for s in ("created", "duplicate", "rejected"))
    body = {
        "received": received,
        "created": created,
        "duplicates": duplicates,
        "rejected": rejected,
        "alerts_opened": result.alerts_opened,
        "items": [{"index": o.index, "status": o.status, "id": o.id} for o in result.outcomes],
        "errors": [
            {"index": o.index, "field": e.field, "detail": e.message}
            for o in result.outcomes
            for e in o.errors
        ],
    }
    status = 422 if rejected and not created and not duplicates else 200
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed(
            "The body is not valid JSON.", errors=[FieldError("body", "invalid JSON")]
        ) from None


@router.post("/readings", response_model=BatchResult, openapi_extra=_BATCH_SCHEMA)
async def post_readings(request: Request, session: DbSession, caller: IngestCaller) -> Response:
    """Native batch door: a JSON array of up to 10,000 readings. Valid items are stored even when others are
    rejected (each error names the item index and field); replays are reported as duplicates and stored
    once. Authenticate with a device key (`Authorization: Bearer tcdk_...`) or a user credential."""
    items = await json_body(request)
    result = await service.ingest_native(session, caller, items)
    return batch_response(result, len(items))


@router.get("/patients/{patient_id}/readings", response_model=list[ReadingRead])
async def list_readings(
    patient_id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    kind: Annotated[list[Kind] | None, Query()] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[ReadingRead]:
    """A patient's readings, newest first."""
    rows = await service.patient_readings(
        session, principal, patient_id=patient_id, kinds=kind, since=since, until=until, limit=limit
    )
    return [ReadingRead.model_validate(r) for r in rows]


@router.post("/patients/{patient_id}/readings", response_model=ReadingRead, status_code=201)
async def manual_reading(
    patient_id: PathId, body: ManualReading, session: DbSession, principal: CurrentPrincipal
) -> ReadingRead:
    """Enter a reading by hand (patient portal or clinician)."""
    reading = await service.enter_manual_reading(session, principal, patient_id=patient_id, data=body)
    return ReadingRead.model_validate(reading)


@router.post("/devices", response_model=DeviceRead, status_code=201)
async def register_device(body: DeviceCreate, session: DbSession, principal: CurrentPrincipal) -> DeviceRead:
    """Register a device (type, manufacturer, model, serial, UDI when known)."""
    return DeviceRead.model_validate(await device_registry.register_device(session, principal, data=body))


@router.post("/patients/{patient_id}/devices", status_code=201)
async def assign_device(
    patient_id: PathId, body: AssignmentCreate, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Assign a device to the patient (ends its previous assignment)."""
    a = await device_registry.assign_device(
        session, principal, patient_id=patient_id, device_id=body.device_id, started_at=body.started_at
    )
    return {"id": a.id, "device_id": a.device_id, "patient_id": a.patient_id, "started_at": a.started_at}


@router.get("/patients/{patient_id}/devices")
async def list_devices(
    patient_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    """Devices assigned to the patient, with assignment dates."""
    rows = await device_registry.patient_devices(session, principal, patient_id=patient_id)
    return [
        {**DeviceRead.model_validate(d).model_dump(), "started_at": a.started_at, "ended_at": a.ended_at}
        for d, a in rows
    ]


@router.post("/device-keys", response_model=DeviceKeyCreated, status_code=201)
async def create_device_key(
    session: DbSession,
    principal: CurrentPrincipal,
    device_id: Annotated[list[BoundedId], Query(min_length=1, max_length=1000)],
    name: Annotated[str, Query(min_length=1, max_length=100)] = "integration",
) -> DeviceKeyCreated:
    """Issue a key that may post only for the listed devices. The key is shown once."""
    record, key = await device_registry.create_device_key(session, principal, device_ids=device_id, name=name)
    return DeviceKeyCreated(id=record.id, key=key, device_ids=sorted(device_id))


@router.delete("/device-keys/{key_id}", status_code=204)
async def revoke_device_key(key_id: PathId, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Revoke a device key at once."""
    await device_registry.revoke_device_key(session, principal, key_id=key_id)
    return Response(status_code=204)


@router.post("/patients/{patient_id}/enrolment", response_model=EnrolmentRead, status_code=201)
async def enrol(
    patient_id: PathId, body: EnrolmentCreate, session: DbSession, principal: CurrentPrincipal
) -> EnrolmentRead:
    """Enrol the patient in RPM with consent and the ordering physician."""
    return EnrolmentRead.model_validate(
        await care.enrol_patient(session, principal, patient_id=patient_id, data=body)
    )


@router.get("/patients/{patient_id}/rules", response_model=list[RuleRead])
async def rules(patient_id: PathId, session: DbSession, principal: CurrentPrincipal) -> list[RuleRead]:
    """The alert rules as they apply to this patient now, with sources and overrides."""
    return await care.patient_rules(session, principal, patient_id=patient_id)


@router.put("/patients/{patient_id}/rules/{rule_code}", response_model=list[RuleRead])
async def override_rule(
    patient_id: PathId, rule_code: str, body: OverrideSet, session: DbSession, principal: CurrentPrincipal
) -> list[RuleRead]:
    """Override a rule for this patient (audited with who and why)."""
    await care.set_override(session, principal, patient_id=patient_id, rule_code=rule_code, data=body)
    return await care.patient_rules(session, principal, patient_id=patient_id)


@router.get("/alerts")
async def worklist(
    session: DbSession,
    principal: CurrentPrincipal,
    program: Annotated[str | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    """The nurse worklist: patients with open alerts (by tier, then age), then patients with missing data."""
    data = await repository.worklist(session, principal, program=program)
    return data.as_json()


@router.get("/patients/{patient_id}/alerts", response_model=list[AlertRead])
async def patient_alerts(
    patient_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> list[AlertRead]:
    """All alerts of the patient, newest first."""
    rows = await care.patient_alerts(session, principal, patient_id=patient_id)
    return [AlertRead.model_validate(a) for a in rows]


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertRead)
async def acknowledge(
    alert_id: PathId, body: AlertNote, session: DbSession, principal: CurrentPrincipal
) -> AlertRead:
    """Acknowledge an alert with a note (stops its escalation)."""
    return AlertRead.model_validate(
        await care.acknowledge_alert(session, principal, alert_id=alert_id, note=body.note)
    )


@router.post("/alerts/{alert_id}/resolve", response_model=AlertRead)
async def resolve(
    alert_id: PathId, body: AlertNote, session: DbSession, principal: CurrentPrincipal
) -> AlertRead:
    """Resolve an alert with a note."""
    return AlertRead.model_validate(
        await care.resolve_alert(session, principal, alert_id=alert_id, note=body.note)
    )


@router.post("/patients/{patient_id}/time", response_model=TimeEntryRead, status_code=201)
async def log_time(
    patient_id: PathId, body: TimeEntryCreate, session: DbSession, principal: CurrentPrincipal
) -> TimeEntryRead:
    """Log interactive communication or management minutes against the RPM episode."""
    return TimeEntryRead.model_validate(
        await care.log_time(session, principal, patient_id=patient_id, data=body)
    )


@router.get("/patients/{patient_id}/cgm")
async def cgm_metrics(
    patient_id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    days: Annotated[int, Query(ge=1, le=90)] = 14,
) -> dict[str, Any]:
    """CGM consensus metrics over the last `days` (only when data sufficiency is met) and the AGP."""
    report = await cgm.patient_report(session, principal, patient_id=patient_id, days=days)
    return report.as_json()


@router.get("/billing", response_model=list[BillingRowRead])
async def billing_worklist(
    session: DbSession,
    principal: CurrentPrincipal,
    month: Annotated[str | None, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")] = None,
) -> list[BillingRowRead]:
    """The monthly RPM billing worklist (`month=YYYY-MM`): each line with the facts it was derived from."""
    first = None
    if month:
        try:  # the pattern admits year 0000, which `date` does not
            first = date.fromisoformat(month + "-01")
        except ValueError:
            raise ValidationFailed(errors=[FieldError("month", "a calendar month, YYYY-MM")]) from None
    rows = await billing.worklist(session, principal, month=first)
    return [BillingRowRead.model_validate(r.as_json()) for r in rows]
