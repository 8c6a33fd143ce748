"""Monitoring ingestion (by caller, manual entry), reading queries and the patient export. Devices and keys
are in devices.py; enrolment, thresholds, alerts and logged time in care.py. Services never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.db import UnitOfWork, as_uow
from telecare.core.errors import Conflict, FieldError, ValidationFailed
from telecare.identity.models import Patient
from telecare.monitoring.coalesce import Coalescer
from telecare.monitoring.codes import Kind
from telecare.monitoring.credentials import (
    DeviceCaller,
)
from telecare.monitoring.ingest import (
    Candidate,
    Outcome,
    StoreResult,
    Values,
    bind_devices,
    check_time,
    normalise_serial,
    normalise_values,
    offset_minutes,
    store,
)
from telecare.monitoring.models import (
    Alert,
    Reading,
    ReadingSource,
    RpmEnrolment,
)
from telecare.monitoring.schemas import (
    ManualReading,
    NativeReading,
)


class BatchTooLarge(ValidationFailed):
    """More readings in one request than the configured maximum."""

    code = "batch_too_large"
    title = "Too many readings in one request"


class NoActiveEnrolment(Conflict):
    """The patient is not enrolled in RPM (time cannot be logged, data cannot be billed)."""

    code = "not_enrolled"
    title = "Patient not enrolled in remote monitoring"


class AlertClosed(Conflict):
    """The alert is already resolved."""

    code = "alert_resolved"
    title = "Alert already resolved"


_native = TypeAdapter(NativeReading)


def _settings(session: AsyncSession) -> Any:
    return as_uow(session).settings


def coalescer(uow: UnitOfWork) -> Coalescer:
    """The process's group committer for device uploads (see monitoring/coalesce.py)."""
    return uow.component(Coalescer, lambda: Coalescer(uow.db, store=resolve_and_store))


def _audit_key(session: AsyncSession) -> bytes:
    return access.audit_key(session)


# ---- ingestion ---------------------------------------------------------------------------------------------


@dataclass
class Draft:
    """A validated, normalised reading whose patient is not resolved yet."""

    index: int
    prefix: str
    kind: Kind
    values: Values
    measured_at: datetime
    device_serial: str | None = None
    patient_id: int | None = None
    device_reading_id: str | None = None
    device_label: str | None = None
    trend: str | None = None
    note: str | None = None


def _validation_errors(index: int, exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "item"
        out.append(FieldError(f"{index}.{loc}", str(err.get("msg", "invalid"))))
    return out


def parse_native(items: Sequence[Any]) -> tuple[list[Draft], list[Outcome]]:
    """Validate each item on its own: a bad item is reported and the good ones go on."""
    drafts: list[Draft] = []
    rejected: list[Outcome] = []
    for i, raw in enumerate(items):
        try:
            item = _native.validate_python(raw)
        except ValidationError as exc:
            rejected.append(Outcome(i, "rejected", errors=_validation_errors(i, exc)))
            continue
        prefix = f"{i}."
        errors = check_time(prefix, item.measured_at)
        values = normalise_values(
            prefix, item.kind, item.unit, value=item.value, systolic=item.systolic, diastolic=item.diastolic
        )
        if isinstance(values, list):
            errors += values
        if errors or isinstance(values, list):
            rejected.append(Outcome(i, "rejected", errors=errors))
            continue
        drafts.append(
            Draft(
                i,
                prefix,
                item.kind,
                values,
                item.measured_at,
                device_serial=item.device,
                device_reading_id=item.reading_id,
            )
        )
    return drafts, rejected


async def resolve_and_store(
    session: AsyncSession,
    caller: Principal | DeviceCaller,
    drafts: Sequence[Draft],
    rejected: list[Outcome],
    *,
    source: ReadingSource,
    device_field: str = "device",
    subject_field: str = "subject",
) -> StoreResult:
    """Find each draft's patient (device assignment at the measured time, or the named subject), check
    that the caller may post for it, and store the rest."""
    org_id = caller.org_id
    bindings = await bind_devices(session, org_id, [d.device_serial for d in drafts if d.device_serial])
    staged: list[tuple[Draft, int, int | None, str]] = []
    for d in drafts:
        problem: FieldError | None = None
        patient_id = d.patient_id
        device_id: int | None = None
        ident = "unspecified"
        if d.device_serial:
            binding = bindings.get(normalise_serial(d.device_serial))
            if binding is None or (
                isinstance(caller, DeviceCaller) and binding.device_id not in caller.device_ids
            ):
                problem = FieldError(
                    f"{d.prefix}{device_field}", "unknown device or not linked to this credential"
                )
            else:
                assigned = binding.patient_at(d.measured_at)
                if assigned is None:
                    problem = FieldError(
                        f"{d.prefix}{device_field}", "device not assigned to a patient at measured_at"
                    )
                elif patient_id is not None and patient_id != assigned:
                    problem = FieldError(
                        f"{d.prefix}{subject_field}", "does not match the patient of the device"
                    )
                else:
                    patient_id, device_id, ident = assigned, binding.device_id, f"dev:{binding.serial_norm}"
        elif isinstance(caller, DeviceCaller):
            problem = FieldError(f"{d.prefix}{device_field}", "required with a device key")
        elif patient_id is None:
            problem = FieldError(f"{d.prefix}{subject_field}", "required")
        else:
            ident = f"user:{caller.user_id}"
        if problem is not None or patient_id is None:
            rejected.append(Outcome(d.index, "rejected", errors=[problem] if problem else []))
            continue
        staged.append((d, patient_id, device_id, ident))
    if isinstance(caller, Principal) and staged:
        wanted = sorted({pid for _, pid, _, _ in staged})
        scope = access.patient_scope(caller, Resource.OBSERVATION, Action.CREATE)
        allowed = set(
            (
                await session.execute(
                    select(Patient.id).where(Patient.id.in_(wanted), Patient.id.in_(scope.scalar_subquery()))
                )
            ).scalars()
        )
        kept = []
        for d, pid, dev, ident in staged:
            if pid in allowed:
                kept.append((d, pid, dev, ident))
                continue
            field_name = device_field if d.device_serial else subject_field
            rejected.append(
                Outcome(
                    d.index, "rejected", errors=[FieldError(f"{d.prefix}{field_name}", "patient not found")]
                )
            )
        for pid in sorted(set(wanted) - allowed):
            access.record_denial(
                session,
                caller,
                resource=Resource.OBSERVATION,
                action=Action.CREATE,
                patient_id=pid,
                resource_id=None,
            )
        staged = kept
    else:
        # A device key's devices are in its organization; make sure the patients are too.
        wanted = sorted({pid for _, pid, _, _ in staged})
        in_org = set(
            (
                await session.execute(
                    select(Patient.id).where(Patient.id.in_(wanted), Patient.org_id == org_id)
                )
            ).scalars()
        )
        staged = [s for s in staged if s[1] in in_org]
    candidates = [
        Candidate(
            index=d.index,
            org_id=org_id,
            patient_id=pid,
            device_id=dev,
            device_ident=ident,
            source=source,
            kind=d.kind,
            value=d.values.value,
            value2=d.values.value2,
            unit=d.values.unit,
            orig_value=d.values.orig_value,
            orig_value2=d.values.orig_value2,
            orig_unit=d.values.orig_unit,
            measured_at=d.measured_at,
            utc_offset_minutes=offset_minutes(d.measured_at),
            device_reading_id=d.device_reading_id,
            device_label=d.device_label,
            trend=d.trend,
            entered_by_user_id=caller.user_id if isinstance(caller, Principal) else None,
            note=d.note,
        )
        for d, pid, dev, ident in staged
    ]
    return await store(
        session, candidates, actor=caller.actor(), audit_key=_audit_key(session), rejected=rejected
    )


async def ingest_native(session: AsyncSession, caller: Principal | DeviceCaller, items: Any) -> StoreResult:
    """The native batch door. A body that is not a JSON array of 1..max readings stores nothing."""
    if not isinstance(items, list):
        raise ValidationFailed(
            "The body must be a JSON array of readings.", errors=[FieldError("body", "expected an array")]
        )
    limit = _settings(session).rpm_max_batch
    if not items:
        raise ValidationFailed("The batch is empty.", errors=[FieldError("body", "at least one reading")])
    if len(items) > limit:
        raise BatchTooLarge(
            f"At most {limit} readings per request.", errors=[FieldError("body", f"at most {limit} items")]
        )
    drafts, rejected = parse_native(items)
    uow = as_uow(session)
    if isinstance(caller, DeviceCaller) and uow.db.group_commit:
        return await coalescer(uow).submit(caller, drafts, rejected, source=ReadingSource.NATIVE)
    return await resolve_and_store(session, caller, drafts, rejected, source=ReadingSource.NATIVE)


async def enter_manual_reading(
    session: AsyncSession, principal: Principal, *, patient_id: int, data: ManualReading
) -> Reading:
    """A reading typed in by the patient (portal) or a clinician."""
    await access.open_patient(
        session,
        principal,
        patient_id,
        resource=Resource.OBSERVATION,
        action=Action.CREATE,
        audit_access=False,
    )
    errors = check_time("", data.measured_at)
    values = normalise_values(
        "", data.kind, data.unit, value=data.value, systolic=data.systolic, diastolic=data.diastolic
    )
    if isinstance(values, list):
        errors += values
    if errors or isinstance(values, list):
        raise ValidationFailed("The reading is not valid.", errors=errors)
    draft = Draft(0, "", data.kind, values, data.measured_at, patient_id=patient_id, note=data.note)
    result = await resolve_and_store(session, principal, [draft], [], source=ReadingSource.MANUAL)
    outcome = result.outcomes[0]
    if outcome.status == "rejected" or outcome.id is None:
        raise ValidationFailed("The reading is not valid.", errors=outcome.errors)
    reading = await session.get(Reading, outcome.id)
    assert reading is not None
    return reading


# ---- reading queries ---------------------------------------------------------------------------------------


async def patient_readings(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    kinds: Sequence[Kind] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 5000,
) -> list[Reading]:
    await access.open_patient(
        session, principal, patient_id, resource=Resource.OBSERVATION, action=Action.READ
    )
    stmt = select(Reading).where(Reading.patient_id == patient_id)
    if kinds:
        stmt = stmt.where(Reading.kind.in_([str(k) for k in kinds]))
    if since is not None:
        stmt = stmt.where(Reading.measured_at >= since)
    if until is not None:
        stmt = stmt.where(Reading.measured_at < until)
    rows = await session.execute(stmt.order_by(Reading.measured_at.desc(), Reading.id.desc()).limit(limit))
    return list(rows.scalars())


# ---- patient export ----------------------------------------------------------------------------------------


async def export_monitoring(session: AsyncSession, principal: Principal, patient_id: int) -> dict[str, Any]:
    """The patient's RPM data for the compartment export (identity.service.export_patient audits it)."""
    readings = (
        await session.execute(
            select(Reading).where(Reading.patient_id == patient_id).order_by(Reading.measured_at)
        )
    ).scalars()
    alerts = (
        await session.execute(select(Alert).where(Alert.patient_id == patient_id).order_by(Alert.id))
    ).scalars()
    enrolments = (
        await session.execute(select(RpmEnrolment).where(RpmEnrolment.patient_id == patient_id))
    ).scalars()
    return {
        "enrolments": [
            {
                "programs": e.programs,
                "consent_at": e.consent_at.isoformat(),
                "consent_method": e.consent_method,
                "started_on": e.started_on.isoformat(),
                "ended_on": e.ended_on.isoformat() if e.ended_on else None,
            }
            for e in enrolments
        ],
        "readings": [
            {
                "kind": r.kind,
                "code": r.code,
                "value": r.value,
                "value2": r.value2,
                "unit": r.unit,
                "original": {"value": r.orig_value, "value2": r.orig_value2, "unit": r.orig_unit},
                "measured_at": r.measured_at.isoformat(),
                "utc_offset_minutes": r.utc_offset_minutes,
                "source": r.source,
            }
            for r in readings
        ],
        "alerts": [
            {
                "title": a.title,
                "detail": a.detail,
                "tier": a.tier,
                "status": a.status,
                "created_at": a.created_at.isoformat(),
            }
            for a in alerts
        ],
    }
