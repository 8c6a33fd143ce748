"""Monitoring rules of the road: ingestion by caller, manual entry, devices and keys, enrolment, per-patient
overrides, alert acknowledgement and resolution, and logged time. Services never commit."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.audit.models import AuditAction
from telecare.auth.principal import Principal
from telecare.core.crypto import new_token, token_digest
from telecare.core.db import UnitOfWork, as_uow
from telecare.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Patient, Practitioner, Role, User
from telecare.monitoring import alerts as alert_engine
from telecare.monitoring.coalesce import Coalescer
from telecare.monitoring.codes import Kind
from telecare.monitoring.credentials import (
    DeviceCaller,
    forget_key,
    new_device_key,
    nightscout_digest,
    sha1_hex,
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
    AlertStatus,
    Device,
    DeviceAssignment,
    DeviceKey,
    NightscoutSecret,
    Reading,
    ReadingSource,
    RpmEnrolment,
    ThresholdOverride,
    TimeEntry,
)
from telecare.monitoring.rules import DEFAULT_RULES, RULES_BY_CODE, effective_rule
from telecare.monitoring.schemas import (
    DeviceCreate,
    EnrolmentCreate,
    ManualReading,
    NativeReading,
    OverrideSet,
    RuleRead,
    TimeEntryCreate,
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


# ---- devices and credentials -------------------------------------------------------------------------------


async def register_device(session: AsyncSession, principal: Principal, *, data: DeviceCreate) -> Device:
    access.reach_for(principal, Resource.DEVICE, Action.CREATE)
    norm = normalise_serial(data.serial)
    if not norm:
        raise ValidationFailed(errors=[FieldError("serial", "must contain letters or digits")])
    taken = await session.execute(
        select(Device.id).where(Device.org_id == principal.org_id, Device.serial_norm == norm)
    )
    if taken.first() is not None:
        raise Conflict(
            "A device with this serial is already registered.", errors=[FieldError("serial", "taken")]
        )
    device = Device(
        org_id=principal.org_id,
        device_type=data.device_type,
        manufacturer=data.manufacturer,
        model=data.model,
        serial=data.serial,
        serial_norm=norm,
        udi=data.udi,
    )
    session.add(device)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.DEVICE,
        action=Action.CREATE,
        patient_id=None,
        resource_id=device.id,
    )
    return device


async def assign_device(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    device_id: int,
    started_at: datetime | None = None,
) -> DeviceAssignment:
    """Assign a device to a patient from `started_at`, ending its previous assignment."""
    await access.open_patient(session, principal, patient_id, resource=Resource.DEVICE, action=Action.UPDATE)
    device = await session.get(Device, device_id)
    if device is None or device.org_id != principal.org_id:
        raise NotFound("No such device.")
    return await _assign(session, device, patient_id, started_at or utc_now(), principal.user_id)


async def _assign(
    session: AsyncSession, device: Device, patient_id: int, start: datetime, user_id: int | None
) -> DeviceAssignment:
    await session.execute(
        update(DeviceAssignment)
        .where(DeviceAssignment.device_id == device.id, DeviceAssignment.ended_at.is_(None))
        .values(ended_at=start)
    )
    assignment = DeviceAssignment(
        org_id=device.org_id,
        device_id=device.id,
        patient_id=patient_id,
        started_at=start,
        assigned_by_user_id=user_id,
    )
    session.add(assignment)
    await session.flush()
    return assignment


async def patient_devices(
    session: AsyncSession, principal: Principal, *, patient_id: int
) -> list[tuple[Device, DeviceAssignment]]:
    await access.open_patient(session, principal, patient_id, resource=Resource.DEVICE, action=Action.READ)
    rows = await session.execute(
        select(Device, DeviceAssignment)
        .join(DeviceAssignment, DeviceAssignment.device_id == Device.id)
        .where(DeviceAssignment.patient_id == patient_id)
        .order_by(DeviceAssignment.started_at.desc())
    )
    return [(d, a) for d, a in rows.all()]


async def issue_device_key(
    session: AsyncSession,
    *,
    org_id: int,
    device_ids: Sequence[int],
    name: str,
    created_by_user_id: int | None,
) -> tuple[DeviceKey, str]:
    """A new key linked to `device_ids` (each device answers to one key). The key is returned once."""
    record = DeviceKey(
        org_id=org_id, name=name, key_hash="pending-" + new_token(16), created_by_user_id=created_by_user_id
    )
    session.add(record)
    await session.flush()
    key = new_device_key(record.id, secrets.token_urlsafe(32))
    record.key_hash = token_digest(key)
    if device_ids:
        await session.execute(
            update(Device)
            .where(Device.id.in_(list(device_ids)), Device.org_id == org_id)
            .values(key_id=record.id)
        )
    await session.flush()
    return record, key


async def create_device_key(
    session: AsyncSession, principal: Principal, *, device_ids: Sequence[int], name: str
) -> tuple[DeviceKey, str]:
    access.reach_for(principal, Resource.DEVICE_KEY, Action.CREATE)
    found = (
        (
            await session.execute(
                select(Device.id).where(Device.id.in_(list(device_ids)), Device.org_id == principal.org_id)
            )
        )
        .scalars()
        .all()
    )
    if set(found) != set(device_ids):
        raise ValidationFailed(errors=[FieldError("device_ids", "unknown device")])
    # A key posts readings as its devices' patients: whoever mints one for a device in use must be allowed
    # to create readings for that patient (a coordinator could otherwise post vitals for anyone).
    assigned = (
        await session.execute(
            select(DeviceAssignment.patient_id)
            .where(DeviceAssignment.device_id.in_(list(device_ids)), DeviceAssignment.ended_at.is_(None))
            .distinct()
        )
    ).scalars()
    for patient_id in sorted(assigned):
        await access.open_patient(
            session, principal, patient_id, resource=Resource.OBSERVATION, action=Action.CREATE
        )
    record, key = await issue_device_key(
        session,
        org_id=principal.org_id,
        device_ids=device_ids,
        name=name,
        created_by_user_id=principal.user_id,
    )
    await access.record_access(
        session,
        principal,
        resource=Resource.DEVICE_KEY,
        action=Action.CREATE,
        patient_id=None,
        resource_id=record.id,
    )
    return record, key


async def revoke_device_key(session: AsyncSession, principal: Principal, *, key_id: int) -> DeviceKey:
    access.reach_for(principal, Resource.DEVICE_KEY, Action.DELETE)
    record = await session.get(DeviceKey, key_id)
    if record is None or record.org_id != principal.org_id:
        raise NotFound("No such device key.")
    record.revoked_at = record.revoked_at or utc_now()
    forget_key(key_id)
    await access.record_access(
        session,
        principal,
        resource=Resource.DEVICE_KEY,
        action=Action.DELETE,
        patient_id=None,
        resource_id=key_id,
    )
    return record


async def issue_nightscout_secret(session: AsyncSession, *, patient: Patient) -> str:
    """A new Nightscout API secret for the patient (earlier ones are revoked). Returned once."""
    now = utc_now()
    await session.execute(
        update(NightscoutSecret)
        .where(NightscoutSecret.patient_id == patient.id, NightscoutSecret.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    secret = secrets.token_urlsafe(18)  # Nightscout requires at least 12 characters
    session.add(
        NightscoutSecret(
            org_id=patient.org_id, patient_id=patient.id, secret_hash=nightscout_digest(sha1_hex(secret))
        )
    )
    await session.flush()
    return secret


async def quick_start_key(session: AsyncSession, *, patient: Patient) -> tuple[str, list[Device]]:
    """CLI quick start: a key for the patient's assigned devices (a gateway device is registered and
    assigned when there is none)."""
    devices = list(
        (
            await session.execute(
                select(Device)
                .join(DeviceAssignment, DeviceAssignment.device_id == Device.id)
                .where(DeviceAssignment.patient_id == patient.id, DeviceAssignment.ended_at.is_(None))
            )
        ).scalars()
    )
    if not devices:
        serial = f"GW-{patient.mrn}"
        device = Device(
            org_id=patient.org_id,
            device_type="gateway",
            manufacturer="Telecare",
            model="Integration gateway",
            serial=serial,
            serial_norm=normalise_serial(serial),
        )
        session.add(device)
        await session.flush()
        await _assign(session, device, patient.id, patient.created_at, None)
        devices = [device]
    _, key = await issue_device_key(
        session,
        org_id=patient.org_id,
        device_ids=[d.id for d in devices],
        name=f"quick start {patient.mrn}",
        created_by_user_id=None,
    )
    return key, devices


# ---- enrolment ---------------------------------------------------------------------------------------------


async def active_enrolment(session: AsyncSession, patient_id: int) -> RpmEnrolment | None:
    return (
        (
            await session.execute(
                select(RpmEnrolment)
                .where(RpmEnrolment.patient_id == patient_id, RpmEnrolment.ended_on.is_(None))
                .order_by(RpmEnrolment.id.desc())
            )
        )
        .scalars()
        .first()
    )


async def enrol_patient(
    session: AsyncSession, principal: Principal, *, patient_id: int, data: EnrolmentCreate
) -> RpmEnrolment:
    """Enrol in RPM with consent and the ordering practitioner; this starts the 99453 set-up episode."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_ENROLMENT, action=Action.CREATE
    )
    ordering = (
        await session.execute(
            select(Practitioner, User)
            .join(User, User.id == Practitioner.user_id)
            .where(Practitioner.id == data.ordering_practitioner_id, Practitioner.org_id == principal.org_id)
        )
    ).first()
    if ordering is None or ordering[1].role != Role.PHYSICIAN:
        raise ValidationFailed(
            errors=[FieldError("ordering_practitioner_id", "not a physician of this organization")]
        )
    if await active_enrolment(session, patient_id) is not None:
        raise Conflict("The patient is already enrolled.")
    enrolment = RpmEnrolment(
        org_id=principal.org_id,
        patient_id=patient_id,
        ordering_practitioner_id=data.ordering_practitioner_id,
        programs=[str(p) for p in data.programs],
        consent_at=data.consent_at,
        consent_method=data.consent_method,
        consent_recorded_by_user_id=principal.user_id,
        started_on=data.started_on or utc_now().date(),
    )
    session.add(enrolment)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.RPM_ENROLMENT,
        action=Action.CREATE,
        patient_id=patient_id,
        resource_id=enrolment.id,
        detail={"programs": enrolment.programs, "consent_method": data.consent_method},
    )
    return enrolment


async def end_enrolment(
    session: AsyncSession, principal: Principal, *, patient_id: int, on: date
) -> RpmEnrolment:
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_ENROLMENT, action=Action.UPDATE
    )
    enrolment = await active_enrolment(session, patient_id)
    if enrolment is None:
        raise NoActiveEnrolment()
    enrolment.ended_on = on
    return enrolment


# ---- rules and overrides -----------------------------------------------------------------------------------


async def patient_rules(session: AsyncSession, principal: Principal, *, patient_id: int) -> list[RuleRead]:
    """The rules as they apply to the patient now (defaults, program, override)."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_TARGET, action=Action.READ
    )
    ctx = (await alert_engine.load_patient_rules(session, [patient_id]))[patient_id]
    now = utc_now()
    out = []
    for base in DEFAULT_RULES:
        rule, override = effective_rule(base, ctx.programs, ctx.overrides, now)
        out.append(
            RuleRead(
                code=rule.code,
                title=rule.title,
                tier=rule.tier,
                kinds=sorted(str(k) for k in rule.kinds),
                params=rule.params,
                confirm_minutes=rule.confirm_minutes,
                enabled=rule.enabled,
                source=rule.source,
                overridden=override is not None,
                override_reason=override.reason if override else None,
                override_by_user_id=override.set_by_user_id if override else None,
            )
        )
    return out


async def set_override(
    session: AsyncSession, principal: Principal, *, patient_id: int, rule_code: str, data: OverrideSet
) -> ThresholdOverride:
    """Change a rule for one patient from now on; the previous version stays for readings measured before."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_TARGET, action=Action.UPDATE, audit_access=False
    )
    rule = RULES_BY_CODE.get(rule_code)
    if rule is None:
        raise NotFound("No such rule.")
    unknown = sorted(set(data.params) - set(rule.params))
    if unknown:
        raise ValidationFailed(
            errors=[FieldError(f"params.{k}", f"not a parameter of {rule_code}") for k in unknown]
        )
    now = utc_now()
    await session.execute(
        update(ThresholdOverride)
        .where(
            ThresholdOverride.patient_id == patient_id,
            ThresholdOverride.rule_code == rule_code,
            ThresholdOverride.effective_to.is_(None),
        )
        .values(effective_to=now)
    )
    override = ThresholdOverride(
        org_id=principal.org_id,
        patient_id=patient_id,
        rule_code=rule_code,
        params=dict(data.params),
        confirm_minutes=data.confirm_minutes,
        enabled=data.enabled,
        reason=data.reason,
        set_by_user_id=principal.user_id,
        effective_from=now,
    )
    session.add(override)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.RPM_TARGET,
        action=Action.UPDATE,
        patient_id=patient_id,
        resource_id=override.id,
        detail={
            "rule": rule_code,
            "params": override.params,
            "confirm_minutes": data.confirm_minutes,
            "enabled": data.enabled,
            "reason": data.reason,
        },
    )
    return override


# ---- alerts ------------------------------------------------------------------------------------------------


async def get_alert(session: AsyncSession, principal: Principal, *, alert_id: int, action: Action) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None or alert.org_id != principal.org_id:
        # A role without the grant hears 403 whatever the id (as for the alerts of its own organization),
        # so that 404 versus 403 does not tell it which ids belong to its organization.
        access.reach_for(principal, Resource.RPM_ALERT, action)
        raise NotFound("No such alert.")
    await access.open_patient(
        session, principal, alert.patient_id, resource=Resource.RPM_ALERT, action=action, resource_id=alert_id
    )
    return alert


async def acknowledge_alert(
    session: AsyncSession, principal: Principal, *, alert_id: int, note: str
) -> Alert:
    """The nurse has seen the alert and acts on it: stops the escalation clock."""
    alert = await get_alert(session, principal, alert_id=alert_id, action=Action.UPDATE)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertClosed()
    if alert.status == AlertStatus.OPEN:
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = utc_now()
        alert.acknowledged_by_user_id = principal.user_id
        alert.ack_note = note
        alert_engine.publish_alert(session, alert, "acknowledged")
    return alert


async def resolve_alert(session: AsyncSession, principal: Principal, *, alert_id: int, note: str) -> Alert:
    alert = await get_alert(session, principal, alert_id=alert_id, action=Action.UPDATE)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertClosed()
    now = utc_now()
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by_user_id = now, principal.user_id
    alert.status = AlertStatus.RESOLVED
    alert.resolved_at = now
    alert.resolved_by_user_id = principal.user_id
    alert.resolution_note = note
    alert.open_key = None
    alert_engine.publish_alert(session, alert, "resolved")
    return alert


async def patient_alerts(
    session: AsyncSession, principal: Principal, *, patient_id: int, include_resolved: bool = True
) -> list[Alert]:
    await access.open_patient(session, principal, patient_id, resource=Resource.RPM_ALERT, action=Action.READ)
    stmt = select(Alert).where(Alert.patient_id == patient_id)
    if not include_resolved:
        stmt = stmt.where(alert_engine.not_resolved())
    return list((await session.execute(stmt.order_by(Alert.created_at.desc()))).scalars())


# ---- time tracking -----------------------------------------------------------------------------------------


async def log_time(
    session: AsyncSession, principal: Principal, *, patient_id: int, data: TimeEntryCreate
) -> TimeEntry:
    """Interactive communication or management minutes against the patient's RPM episode."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_TIME, action=Action.CREATE, audit_access=False
    )
    enrolment = await active_enrolment(session, patient_id)
    if enrolment is None:
        raise NoActiveEnrolment()
    if data.kind == "interpretation" and not rules.logs_interpretation(principal):
        raise ValidationFailed(
            errors=[FieldError("kind", "interpretation time (99091) is logged by a physician")]
        )
    entry = TimeEntry(
        org_id=principal.org_id,
        patient_id=patient_id,
        enrolment_id=enrolment.id,
        user_id=principal.user_id,
        kind=data.kind,
        minutes=data.minutes,
        performed_at=data.performed_at or utc_now(),
        note=data.note,
    )
    session.add(entry)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.RPM_TIME,
        action=AuditAction.CREATE,
        patient_id=patient_id,
        resource_id=entry.id,
        detail={"kind": str(data.kind), "minutes": data.minutes},
    )
    return entry


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
