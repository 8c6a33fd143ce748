"""Monitoring pages: nurse worklist (live over a WebSocket), patient monitoring page with charts, billing
worklist, and the patient portal's readings page with manual entry. Thin: each handler calls services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import Authenticated, DbSession
from telecare.auth.principal import Principal
from telecare.auth.sockets import SocketAuth, SocketCaller, SocketGuard, close_with
from telecare.core.db import Database
from telecare.core.errors import FieldError, Forbidden, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity import service as identity
from telecare.identity.models import Patient, Role
from telecare.monitoring import billing, care, cgm, repository, service
from telecare.monitoring import devices as device_registry
from telecare.monitoring.alerts import ALERT_TOPIC
from telecare.monitoring.billing import month_minutes
from telecare.monitoring.codes import SPECS, Kind, Program, units_for
from telecare.monitoring.models import TimeKind
from telecare.monitoring.schemas import ManualReading, OverrideSet, TimeEntryCreate
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

_RPM_STAFF = frozenset({Role.PHYSICIAN, Role.NURSE})
NAV_ITEMS = (
    NavItem(
        "/monitoring",
        "Monitoring",
        resource=Resource.RPM_ALERT,
        action=Action.SEARCH,
        roles=_RPM_STAFF,
        order=20,
    ),
    NavItem(
        "/monitoring/billing",
        "RPM billing",
        resource=Resource.RPM_BILLING,
        action=Action.SEARCH,
        roles=_RPM_STAFF,
        order=21,
    ),
    NavItem(
        "/my/readings",
        "My readings",
        resource=Resource.OBSERVATION,
        action=Action.CREATE,
        roles=frozenset({Role.PATIENT}),
        order=20,
    ),
)


async def _chart_monitoring(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    """Chart section: open RPM alerts, read through the monitoring service (authorised, audited)."""
    alerts = await care.patient_alerts(session, principal, patient_id=patient.id, include_resolved=False)
    return {"alerts": alerts[:10]}


CHART_SECTIONS = (
    ChartSection(
        "monitoring",
        "Remote monitoring",
        _chart_monitoring,
        "monitoring/chart_section.html",
        resource=Resource.RPM_ALERT,
        order=40,
    ),
)
Clinician = Annotated[Principal, Authenticated(Role.NURSE, Role.PHYSICIAN)]
PatientUser = Annotated[Principal, Authenticated(Role.PATIENT)]
PERIODS = (1, 7, 14, 30, 90)


@router.get("/monitoring", response_class=HTMLResponse)
async def worklist_page(
    request: Request,
    session: DbSession,
    principal: Clinician,
    program: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    program = program if program in {str(p) for p in Program} else None
    data = await repository.worklist(session, principal, program=program)
    return templates.TemplateResponse(
        request,
        "monitoring/worklist.html",
        {
            "principal": principal,
            "data": data,
            "program": program or "",
            "programs": [str(p) for p in Program],
        },
    )


def _series(readings: list[Any]) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {}
    for r in sorted(readings, key=lambda x: x.measured_at):
        ms = r.measured_at.timestamp() * 1000
        if r.kind == Kind.BLOOD_PRESSURE:
            out.setdefault("systolic", []).append([ms, r.value])
            out.setdefault("diastolic", []).append([ms, r.value2 or 0])
        else:
            out.setdefault(r.kind, []).append([ms, round(r.value, 1)])
    return out


def _bands(rules: list[Any]) -> dict[str, list[float]]:
    """Target bands per chart from the rules in force (between the low and the high alert limits)."""
    p = {r.code: r.params for r in rules if r.enabled}
    bands: dict[str, list[float]] = {}
    if "bp_crisis" in p or "bp_low" in p:
        bands["systolic"] = [
            p.get("bp_low", {}).get("systolic_below", 90),
            p.get("bp_crisis", {}).get("systolic_above", 180),
        ]
        bands["diastolic"] = [
            p.get("bp_low", {}).get("diastolic_below", 60),
            p.get("bp_crisis", {}).get("diastolic_above", 120),
        ]
    # CGM and meter charts show the consensus target range 70-180 mg/dL (Battelino 2019).
    bands["cgm"] = [70, 180]
    bands["glucose"] = [p.get("glucose_low_l1", {}).get("below", 70), 180]
    if "spo2_low" in p:
        bands["spo2"] = [p["spo2_low"]["below"], 100]
    if "hr_low" in p or "hr_high" in p:
        bands["heart_rate"] = [p.get("hr_low", {}).get("below", 50), p.get("hr_high", {}).get("above", 120)]
    if "fever" in p:
        bands["temperature"] = [35.0, p["fever"]["at_or_above"]]
    return bands


async def _chart_data(
    session: Any, principal: Principal, patient_id: int, days: int
) -> tuple[dict[str, Any], list[Any], list[Any]]:
    since = utc_now() - timedelta(days=days)
    readings = await service.patient_readings(
        session, principal, patient_id=patient_id, since=since, limit=20000
    )
    rules = await care.patient_rules(session, principal, patient_id=patient_id)
    return (
        {
            "series": _series(readings),
            "bands": _bands(rules),
            "labels": {str(k): f"{SPECS[k].display} ({SPECS[k].unit})" for k in Kind}
            | {"systolic": "Systolic (mm[Hg])", "diastolic": "Diastolic (mm[Hg])"},
            "since": since.timestamp() * 1000,
            "until": utc_now().timestamp() * 1000,
        },
        readings,
        rules,
    )


@router.get("/monitoring/patients/{patient_id}", response_class=HTMLResponse)
async def patient_page(
    request: Request,
    patient_id: int,
    session: DbSession,
    principal: Clinician,
    days: Annotated[int, Query(ge=1, le=90)] = 14,
) -> Response:
    patient = await identity.get_patient(session, principal, patient_id=patient_id)
    chart, readings, rules = await _chart_data(session, principal, patient_id, days)
    alerts = await care.patient_alerts(session, principal, patient_id=patient_id)
    chart["alerts"] = [
        {"t": a.first_measured_at.timestamp() * 1000, "title": a.title}
        for a in alerts
        if a.first_measured_at is not None and a.first_measured_at.timestamp() * 1000 >= chart["since"]
    ]
    cgm_days = max(days, 14)
    report = await cgm.patient_report(session, principal, patient_id=patient_id, days=cgm_days)
    chart["agp"] = report.agp
    devices = await device_registry.patient_devices(session, principal, patient_id=patient_id)
    enrolment = await care.active_enrolment(session, patient_id)
    month_facts = None
    lines: list[Any] = []
    if enrolment is not None:
        first = utc_now().date().replace(day=1)
        minutes, interactive, interpretation, by_kind = await month_minutes(
            session, enrolment.id, first, billing.month_bounds(first)[1]
        )
        month_facts = {
            "minutes": minutes,
            "interactive": interactive,
            "interpretation": interpretation,
            "by_kind": by_kind,
        }
        rows = await billing.worklist(session, principal, month=first)
        lines = next((r.lines for r in rows if r.patient_id == patient_id), [])
    return templates.TemplateResponse(
        request,
        "monitoring/patient.html",
        {
            "principal": principal,
            "patient": patient,
            "chart": chart,
            "days": days,
            "periods": PERIODS,
            "readings": readings[:50],
            "rules": rules,
            "alerts": alerts,
            "cgm": report,
            "cgm_days": cgm_days,
            "devices": devices,
            "enrolment": enrolment,
            "month": month_facts,
            "lines": lines,
            "time_kinds": [str(k) for k in TimeKind],
        },
    )


def _back(patient_id: int) -> RedirectResponse:
    return RedirectResponse(f"/monitoring/patients/{patient_id}", status_code=303)


@router.post("/monitoring/patients/{patient_id}/time")
async def log_time(
    patient_id: int,
    session: DbSession,
    principal: Clinician,
    kind: Annotated[TimeKind, Form()],
    minutes: Annotated[int, Form(ge=1, le=240)],
    note: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    data = TimeEntryCreate(kind=kind, minutes=minutes, note=note or None)
    await care.log_time(session, principal, patient_id=patient_id, data=data)
    return _back(patient_id)


@router.post("/monitoring/patients/{patient_id}/rules/{rule_code}")
async def override_rule(
    request: Request,
    patient_id: int,
    rule_code: str,
    session: DbSession,
    principal: Clinician,
    reason: Annotated[str, Form(min_length=3, max_length=500)],
    confirm_minutes: Annotated[str, Form(max_length=4)] = "",
) -> Response:
    form = await request.form()
    params: dict[str, float] = {}
    for key, value in form.items():
        if key.startswith("param_") and isinstance(value, str) and value.strip():
            try:
                params[key.removeprefix("param_")] = float(value)
            except ValueError:
                raise ValidationFailed(errors=[FieldError(key, "must be a number")]) from None
    confirm = int(confirm_minutes) if confirm_minutes.strip().isdigit() else None
    data = OverrideSet(params=params, reason=reason, confirm_minutes=confirm)
    await care.set_override(session, principal, patient_id=patient_id, rule_code=rule_code, data=data)
    return _back(patient_id)


@router.post("/monitoring/alerts/{alert_id}/{action}")
async def alert_action(
    alert_id: int,
    action: str,
    session: DbSession,
    principal: Clinician,
    note: Annotated[str, Form(min_length=1, max_length=1000)],
) -> Response:
    if action == "acknowledge":
        alert = await care.acknowledge_alert(session, principal, alert_id=alert_id, note=note)
    elif action == "resolve":
        alert = await care.resolve_alert(session, principal, alert_id=alert_id, note=note)
    else:
        raise ValidationFailed(errors=[FieldError("action", "acknowledge or resolve")])
    return _back(alert.patient_id)


@router.get("/monitoring/billing", response_class=HTMLResponse)
async def billing_page(
    request: Request,
    session: DbSession,
    principal: Clinician,
    month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
) -> Response:
    first = date.fromisoformat(month + "-01") if month else utc_now().date().replace(day=1)
    rows = await billing.worklist(session, principal, month=first)
    return templates.TemplateResponse(
        request,
        "monitoring/billing.html",
        {"principal": principal, "rows": rows, "month": first.strftime("%Y-%m")},
    )


# ---- patient portal ----------------------------------------------------------------------------------------


@router.get("/my/readings", response_class=HTMLResponse)
async def my_readings(
    request: Request,
    session: DbSession,
    principal: PatientUser,
    days: Annotated[int, Query(ge=1, le=90)] = 30,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    if principal.patient_id is None:
        raise Forbidden("No patient record is linked to this account.")
    chart, readings, rules = await _chart_data(session, principal, principal.patient_id, days)
    return templates.TemplateResponse(
        request,
        "monitoring/my_readings.html",
        {
            "principal": principal,
            "chart": chart,
            "readings": readings[:100],
            "rules": [r for r in rules if r.enabled and r.code != "missing_data"],
            "days": days,
            "periods": PERIODS,
            "kinds": [(str(k), SPECS[k].display, units_for(k)) for k in Kind],
            "error": error,
        },
    )


@router.post("/my/readings")
async def my_readings_add(
    session: DbSession,
    principal: PatientUser,
    kind: Annotated[Kind, Form()],
    measured_at: Annotated[str, Form(max_length=40)],
    unit: Annotated[str, Form(max_length=20)],
    tz_offset: Annotated[int, Form(ge=-840, le=840)] = 0,
    value: Annotated[str, Form(max_length=20)] = "",
    systolic: Annotated[str, Form(max_length=20)] = "",
    diastolic: Annotated[str, Form(max_length=20)] = "",
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Manual entry from the portal. `measured_at` is the browser's local time; `tz_offset` its offset in
    minutes east of UTC."""
    if principal.patient_id is None:
        raise Forbidden("No patient record is linked to this account.")
    from datetime import timezone

    try:
        local = datetime.fromisoformat(measured_at)
    except ValueError:
        raise ValidationFailed(errors=[FieldError("measured_at", "a date and time")]) from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=timezone(timedelta(minutes=tz_offset)))

    def num(field: str, text: str) -> float | None:
        if not text.strip():
            return None
        try:
            return float(text)
        except ValueError:
            raise ValidationFailed(errors=[FieldError(field, "must be a number")]) from None

    data = ManualReading(
        kind=kind,
        measured_at=local,
        unit=unit,
        value=num("value", value),
        systolic=num("systolic", systolic),
        diastolic=num("diastolic", diastolic),
        note=note or None,
    )
    await service.enter_manual_reading(session, principal, patient_id=principal.patient_id, data=data)
    return RedirectResponse("/my/readings", status_code=303)


# ---- live alerts -------------------------------------------------------------------------------------------


ALERTS_SOCKET: SocketAuth[Any] = SocketAuth(Role.NURSE, Role.PHYSICIAN)


async def _scope(db: Database, principal: Principal) -> dict[int, str]:
    async with db.unit_of_work() as session:
        scope = access.patient_scope(principal, Resource.RPM_ALERT, Action.READ).scalar_subquery()
        rows = await session.execute(
            select(Patient.id, Patient.family_name, Patient.given_name).where(Patient.id.in_(scope))
        )
        return {pid: f"{family}, {given}" for pid, family, given in rows.all()}


@router.websocket("/ws/monitoring/alerts")
async def alerts_socket(
    websocket: WebSocket, caller: Annotated[SocketCaller[Any], Depends(ALERTS_SOCKET.dependency())]
) -> None:
    """Pushes alert changes of the patients the clinician may see, as soon as they are committed. Closes
    (4401) once the login is gone and stops pushing a patient once out of reach (`auth.sockets`)."""
    assert caller.principal is not None
    principal = caller.principal
    db: Database = websocket.app.state.db
    events = websocket.app.state.events
    await websocket.accept()
    names = await _scope(db, principal)
    refreshed = utc_now()
    audit_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def drop(lost: set[int]) -> None:
        for pid in lost:
            names.pop(pid, None)

    guard = SocketGuard(
        websocket, ALERTS_SOCKET, caller, resource=Resource.RPM_ALERT, patients=names.keys, on_lost=drop
    )

    async def auditor() -> None:
        # Audit each pushed alert after it was sent, off the latency path.
        while True:
            event = await audit_queue.get()
            if not event:
                return
            try:
                async with db.unit_of_work() as session:
                    await access.record_access(
                        session,
                        principal,
                        resource=Resource.RPM_ALERT,
                        action=Action.READ,
                        patient_id=event["patient_id"],
                        resource_id=event["alert_id"],
                        detail={"via": "dashboard push"},
                    )
            except Exception:
                log.exception("audit of a pushed alert failed")

    audit_task = asyncio.create_task(auditor())
    guarding = asyncio.create_task(guard.run())
    try:
        async with events.subscribe(ALERT_TOPIC) as queue:
            await websocket.send_json({"type": "ready"})
            receiver = asyncio.create_task(websocket.receive_text())
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getter, receiver, guarding}, return_when=asyncio.FIRST_COMPLETED
                )
                if guarding in done:
                    getter.cancel()
                    receiver.cancel()
                    await close_with(websocket, guarding.result())
                    return
                if receiver in done:
                    getter.cancel()
                    receiver.result()  # raises WebSocketDisconnect when the page goes away
                    receiver = asyncio.create_task(websocket.receive_text())
                    continue
                event = getter.result()
                if event.get("org_id") != principal.org_id:
                    continue
                pid = event["patient_id"]
                if pid not in names and utc_now() - refreshed > timedelta(seconds=5):
                    # A new care relationship since the page opened (patient_scope, like every read).
                    fresh = await _scope(db, principal)
                    names.clear()
                    names.update(fresh)
                    refreshed = utc_now()
                if pid not in names:
                    continue
                await websocket.send_json({"type": "alert", **event, "patient_name": names[pid]})
                audit_queue.put_nowait(event)
    except WebSocketDisconnect:
        pass
    finally:
        guarding.cancel()
        audit_queue.put_nowait({})  # drain: every pushed alert is audited
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(audit_task, 10)
