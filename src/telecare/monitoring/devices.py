"""Devices and their credentials: registration, assignment to patients, device keys (for gateways and
vendor integrations) and Nightscout secrets."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.crypto import new_token, token_digest
from telecare.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Patient
from telecare.monitoring.credentials import (
    forget_key,
    new_device_key,
    nightscout_digest,
    sha1_hex,
)
from telecare.monitoring.ingest import (
    normalise_serial,
)
from telecare.monitoring.models import (
    Device,
    DeviceAssignment,
    DeviceKey,
    NightscoutSecret,
)
from telecare.monitoring.schemas import (
    DeviceCreate,
)

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
