"""Authorization-matrix probes for remote patient monitoring (see tests/access/matrix_kit.py): readings
(Observation, on the REST and the FHIR API), devices and device keys, RPM enrolment (EpisodeOfCare), alerts
(Flag), per-patient targets (Goal), logged time and the billing worklist.

The world gets, for each of its four patients, an active RPM enrolment, a device assigned to the patient, a
reading, an open alert and a threshold override; each carries a marker string that only that record holds
(reading note, device serial, alert detail, override reason), so a refused or filtered case can assert that
the record is nowhere in the body. The FHIR Patient read and search are registered as the second surface of
the foundation's Patient probes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from telecare.access.policy import Action, Resource
from telecare.core.time import utc_now
from telecare.identity.models import Role
from telecare.monitoring.models import (
    Alert,
    AlertStatus,
    Device,
    DeviceAssignment,
    DeviceKey,
    Reading,
    RpmEnrolment,
    ThresholdOverride,
    Tier,
    TimeEntry,
)
from tests.access.matrix_kit import (
    Caller,
    Outcome,
    Party,
    PatientRec,
    Rel,
    Target,
    World,
    absent,
    body_of,
    ids_in,
    next_case,
    parity,
    probe,
    targets,
    world_setup,
)
from tests.factories import setup_uow

OBS, DEV, KEY, ENR, FLAG, GOAL, TIME, BILL, P = (
    Resource.OBSERVATION,
    Resource.DEVICE,
    Resource.DEVICE_KEY,
    Resource.RPM_ENROLMENT,
    Resource.RPM_ALERT,
    Resource.RPM_TARGET,
    Resource.RPM_TIME,
    Resource.RPM_BILLING,
    Resource.PATIENT,
)
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/monitoring"
FHIR = "/fhir/R4"
RULE = "spo2_low"  # the rule the world's overrides (Goal) change


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


def _marker(kind: str, patient_id: int) -> str:
    return f"Rpm{kind}{patient_id}zq"  # e.g. RpmNote7zq: a string only that record holds


# ---- the world's monitoring rows ---------------------------------------------------------------------------


@world_setup
async def _monitoring_world(world: World) -> None:
    now = utc_now()
    async with setup_uow(world.db) as s:
        for party in (world.a, world.b):
            physician = party.accounts[Role.PHYSICIAN]
            assert physician.practitioner_id is not None
            for rec in (party.own, party.other):
                pid = rec.id
                s.add(
                    RpmEnrolment(
                        org_id=party.org_id,
                        patient_id=pid,
                        ordering_practitioner_id=physician.practitioner_id,
                        programs=["copd"],
                        consent_at=now - timedelta(days=40),
                        consent_method="verbal",
                        started_on=(now - timedelta(days=40)).date(),
                    )
                )
                device = Device(
                    org_id=party.org_id,
                    device_type="pulse_oximeter",
                    manufacturer="Probe",
                    model="Ox",
                    serial=_marker("Serial", pid),
                    serial_norm=_marker("Serial", pid).upper(),
                )
                s.add(device)
                await s.flush()
                s.add(
                    DeviceAssignment(
                        org_id=party.org_id,
                        device_id=device.id,
                        patient_id=pid,
                        started_at=now - timedelta(days=40),
                    )
                )
                reading = Reading(
                    org_id=party.org_id,
                    patient_id=pid,
                    device_id=device.id,
                    source="native",
                    kind="heart_rate",
                    code="8867-4",
                    value=71.0,
                    unit="/min",
                    orig_value=71.0,
                    orig_unit="/min",
                    measured_at=now - timedelta(hours=3),
                    utc_offset_minutes=0,
                    received_at=now - timedelta(hours=3),
                    identity_hash=uuid.uuid4().hex,
                    note=_marker("Note", pid),
                )
                alert = Alert(
                    org_id=party.org_id,
                    patient_id=pid,
                    rule_code=RULE,
                    tier=Tier.SAME_DAY,
                    status=AlertStatus.OPEN,
                    open_key=f"{pid}:{RULE}",
                    title="Oxygen saturation below target",
                    detail=_marker("Alert", pid),
                    reading_count=1,
                    created_at=now - timedelta(hours=2),
                )
                override = ThresholdOverride(
                    org_id=party.org_id,
                    patient_id=pid,
                    rule_code=RULE,
                    params={"below": 87.0},
                    enabled=True,
                    reason=_marker("Goal", pid),
                    set_by_user_id=physician.user_id,
                    effective_from=now - timedelta(days=1),
                )
                s.add_all([reading, alert, override])
                await s.flush()
                world.extra[f"rpm:{pid}"] = {"device": device.id, "reading": reading.id, "alert": alert.id}
            # A device per organization for the key and assignment probes, assigned to nobody at first.
            spare = Device(
                org_id=party.org_id,
                device_type="scale",
                manufacturer="Probe",
                model="Spare",
                serial=f"SPARE-{party.org_id}",
                serial_norm=f"SPARE{party.org_id}",
            )
            s.add(spare)
            await s.flush()
            world.extra[f"rpm:spare:{party.org_id}"] = spare.id


# ---- targets ----------------------------------------------------------------------------------------------


def _patient_of(world: World, rel: Rel) -> PatientRec:
    return {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]


def _record_target(row: str, marker: str | None) -> Any:
    async def target(world: World, caller: Caller, rel: Rel) -> Target:
        rec = _patient_of(world, rel)
        ids = world.extra[f"rpm:{rec.id}"]
        return Target(
            ids[row] if row else rec.id,
            rec.id,
            (*rec.markers, *([_marker(marker, rec.id)] if marker else [])),
            {"org_id": rec.org_id, **ids},
        )

    return target


targets(OBS)(_record_target("reading", "Note"))
targets(DEV)(_record_target("device", "Serial"))
targets(FLAG)(_record_target("alert", "Alert"))
targets(GOAL)(_record_target("", "Goal"))
# Enrolment, time and billing act on the patient (one active episode each): the target is the patient.
targets(ENR)(_record_target("", None))
targets(TIME)(_record_target("", None))
targets(BILL)(_record_target("", None))


@targets(KEY)
async def _key_target(world: World, caller: Caller, rel: Rel) -> Target:
    # Device keys belong to an organization, not a patient: own and same-organization are organization A.
    party: Party = world.b if rel is Rel.OTHER_ORG else world.a
    return Target(None, data={"org_id": party.org_id, "device": world.extra[f"rpm:spare:{party.org_id}"]})


# ---- Observation ------------------------------------------------------------------------------------------


@probe(OBS, R)
async def _readings_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/patients/{t.patient_id}/readings", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@parity(OBS, R)
async def _fhir_observation_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{FHIR}/Observation/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == str(t.id))


def _entry_ids(body: Any) -> set[str]:
    if not isinstance(body, dict):
        return set()
    return {str(e.get("resource", {}).get("id")) for e in body.get("entry", []) if isinstance(e, dict)}


@probe(OBS, S)
async def _fhir_observation_search(world: World, caller: Caller, t: Target) -> Outcome:
    # A search naming one patient answers like the REST door: 404 (and a denied audit entry naming the
    # patient) when that patient is out of reach, whether or not they exist.
    r = await world.client.get(
        f"{FHIR}/Observation", params={"patient": f"Patient/{t.patient_id}"}, headers=caller.headers
    )
    return Outcome(r, _ok(r) and str(t.id) in _entry_ids(body_of(r)))


@parity(OBS, S, collection=True)
async def _fhir_observation_search_all(world: World, caller: Caller, t: Target) -> Outcome:
    # Across patients, an out-of-reach patient's readings are simply not there (no search oracle).
    r = await world.client.get(f"{FHIR}/Observation", params={"_count": "1000"}, headers=caller.headers)
    return Outcome(r, _ok(r) and str(t.id) in _entry_ids(body_of(r)))


async def _reading_count(world: World, **where: Any) -> int:
    async with setup_uow(world.db) as s:
        stmt = select(Reading.id).filter_by(**where)
        return len((await s.execute(stmt)).all())


def _measured_at(n: int) -> str:
    # A distinct minute per case: readings are deduplicated on patient, device, kind and measured time.
    return (utc_now() - timedelta(hours=1, minutes=n % 600, seconds=n // 600)).isoformat()


@probe(OBS, C)
async def _manual_reading(world: World, caller: Caller, t: Target) -> Outcome:
    note = f"manual probe {next_case()}"
    r = await world.client.post(
        f"{API}/patients/{t.patient_id}/readings",
        json={
            "kind": "heart_rate",
            "measured_at": _measured_at(next_case()),
            "value": 64,
            "unit": "/min",
            "note": note,
        },
        headers=caller.headers,
    )
    made = await _reading_count(world, note=note, patient_id=t.patient_id) == 1
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, made)


@parity(OBS, C)
async def _fhir_observation_create(world: World, caller: Caller, t: Target) -> Outcome:
    ident = f"fhir-probe-{next_case()}"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{t.patient_id}"},
        "effectiveDateTime": _measured_at(next_case()),
        "valueQuantity": {"value": 66, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "identifier": [{"value": ident}],
    }
    r = await world.client.post(f"{FHIR}/Observation", json=observation, headers=caller.headers)
    made = await _reading_count(world, device_reading_id=ident, patient_id=t.patient_id) == 1
    body = body_of(r) or {}
    return Outcome(r, _ok(r) and body.get("subject", {}).get("reference") == f"Patient/{t.patient_id}", made)


absent(
    OBS,
    UPD,
    "PUT",
    f"{FHIR}/Observation/{{id}}",
    reason="readings are device data: a correction is a new one",
)
absent(
    OBS, D, "DELETE", f"{FHIR}/Observation/{{id}}", reason="readings are kept (billing and alert evidence)"
)
absent(
    OBS,
    E,
    "GET",
    f"{API}/patients/{{patient_id}}/readings/$export",
    reason="readings leave in the patient's export (Patient $export, section remote_monitoring)",
)

# ---- FHIR Patient: the second surface of the foundation's Patient read and search -------------------------


@parity(P, R)
async def _fhir_patient_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{FHIR}/Patient/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == str(t.id))


@parity(P, S, collection=True)
async def _fhir_patient_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(
        f"{FHIR}/Patient", params={"identifier": t.data["mrn"]}, headers=caller.headers
    )
    return Outcome(r, _ok(r) and str(t.id) in _entry_ids(body_of(r)))


# ---- Device -----------------------------------------------------------------------------------------------


@probe(DEV, R)
async def _devices_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/patients/{t.patient_id}/devices", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


absent(
    DEV, S, "GET", f"{API}/devices", reason="no device inventory listing yet; devices are read per patient"
)


async def _assigned_to(world: World, device_id: int, patient_id: int | None) -> bool:
    async with setup_uow(world.db) as s:
        row = (
            await s.execute(
                select(DeviceAssignment.id).where(
                    DeviceAssignment.device_id == device_id,
                    DeviceAssignment.patient_id == patient_id,
                    DeviceAssignment.ended_at.is_(None),
                )
            )
        ).first()
    return row is not None


@probe(DEV, C)
async def _device_hand_out(world: World, caller: Caller, t: Target) -> Outcome:
    # A device becomes a patient's when it is registered and handed out: register a new monitor in the
    # caller's organization, then assign it to the target patient. Registering alone names no patient.
    serial = f"NEW-{next_case()}"
    r = await world.client.post(
        f"{API}/devices",
        json={"device_type": "bp_cuff", "manufacturer": "Probe", "model": "Cuff", "serial": serial},
        headers=caller.headers,
    )
    if not _ok(r):
        return Outcome(r, False, False)
    device_id = body_of(r)["id"]
    r = await world.client.post(
        f"{API}/patients/{t.patient_id}/devices", json={"device_id": device_id}, headers=caller.headers
    )
    shown = _ok(r) and body_of(r).get("patient_id") == t.patient_id
    return Outcome(r, shown, await _assigned_to(world, device_id, t.patient_id))


@probe(DEV, UPD)
async def _device_assign(world: World, caller: Caller, t: Target) -> Outcome:
    # Reassign the caller's organization's spare device to the target patient.
    spare = world.extra[f"rpm:spare:{world.a.org_id}"]
    async with setup_uow(world.db) as s:
        await s.execute(
            update(DeviceAssignment)
            .where(DeviceAssignment.device_id == spare, DeviceAssignment.ended_at.is_(None))
            .values(ended_at=utc_now())
        )
    r = await world.client.post(
        f"{API}/patients/{t.patient_id}/devices", json={"device_id": spare}, headers=caller.headers
    )
    shown = _ok(r) and body_of(r).get("patient_id") == t.patient_id
    return Outcome(r, shown, await _assigned_to(world, spare, t.patient_id))


absent(
    DEV,
    D,
    "DELETE",
    f"{API}/devices/{{id}}",
    reason="devices are reassigned, never deleted (readings keep them)",
)
absent(DEV, E, "GET", f"{API}/patients/{{patient_id}}/devices/$export", reason="in the patient's export")

# ---- DeviceKey --------------------------------------------------------------------------------------------

absent(KEY, R, "GET", f"{API}/device-keys/{{id}}", reason="a key is shown once, when it is issued")
absent(KEY, S, "GET", f"{API}/device-keys", reason="no key listing route yet")


@probe(KEY, C)
async def _key_create(world: World, caller: Caller, t: Target) -> Outcome:
    name = f"probe-{next_case()}"
    r = await world.client.post(
        f"{API}/device-keys", params={"device_id": t.data["device"], "name": name}, headers=caller.headers
    )
    async with setup_uow(world.db) as s:
        made = (await s.execute(select(DeviceKey.id).where(DeviceKey.name == name))).first() is not None
    return Outcome(r, _ok(r) and body_of(r).get("device_ids") == [t.data["device"]], made)


absent(KEY, UPD, "PATCH", f"{API}/device-keys/{{id}}", reason="keys are revoked and reissued, never edited")


@probe(KEY, D)
async def _key_revoke(world: World, caller: Caller, t: Target) -> Outcome:
    async with setup_uow(world.db) as s:
        key = DeviceKey(org_id=t.data["org_id"], name="to revoke", key_hash=uuid.uuid4().hex)
        s.add(key)
        await s.flush()
        key_id = key.id
    r = await world.client.delete(f"{API}/device-keys/{key_id}", headers=caller.headers)
    async with setup_uow(world.db) as s:
        revoked = (await s.execute(select(DeviceKey.revoked_at).where(DeviceKey.id == key_id))).scalar_one()
    return Outcome(r, _ok(r), revoked is not None)


absent(KEY, E, "GET", f"{API}/device-keys/$export", reason="secrets are stored as digests only")

# ---- EpisodeOfCare (RPM enrolment) ------------------------------------------------------------------------

absent(
    ENR, R, "GET", f"{API}/patients/{{patient_id}}/enrolment", reason="no REST read yet (chart page, billing)"
)
absent(ENR, S, "GET", f"{API}/enrolments", reason="no REST search yet (the billing worklist lists enrolled)")


@probe(ENR, C)
async def _enrol(world: World, caller: Caller, t: Target) -> Outcome:
    # The world's patients are enrolled: end the active episode first, restore it when nothing new came.
    async with setup_uow(world.db) as s:
        active = (
            await s.execute(
                select(RpmEnrolment.id).where(
                    RpmEnrolment.patient_id == t.patient_id, RpmEnrolment.ended_on.is_(None)
                )
            )
        ).scalar_one()
        await s.execute(
            update(RpmEnrolment).where(RpmEnrolment.id == active).values(ended_on=utc_now().date())
        )
    party = world.a if t.data["org_id"] == world.a.org_id else world.b
    r = await world.client.post(
        f"{API}/patients/{t.patient_id}/enrolment",
        json={
            "ordering_practitioner_id": party.accounts[Role.PHYSICIAN].practitioner_id,
            "programs": ["hypertension"],
            "consent_at": utc_now().isoformat(),
            "consent_method": "verbal",
        },
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        new = (
            await s.execute(
                select(RpmEnrolment.id).where(
                    RpmEnrolment.patient_id == t.patient_id,
                    RpmEnrolment.ended_on.is_(None),
                    RpmEnrolment.id > active,
                )
            )
        ).first()
        if new is None:
            await s.execute(update(RpmEnrolment).where(RpmEnrolment.id == active).values(ended_on=None))
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, new is not None)


absent(
    ENR, UPD, "PATCH", f"{API}/patients/{{patient_id}}/enrolment", reason="ending an episode has no route yet"
)
absent(
    ENR,
    D,
    "DELETE",
    f"{API}/patients/{{patient_id}}/enrolment",
    reason="episodes end, never vanish (billing)",
)
absent(ENR, E, "GET", f"{API}/patients/{{patient_id}}/enrolment/$export", reason="in the patient's export")

# ---- Flag (alerts) ----------------------------------------------------------------------------------------


@probe(FLAG, R)
async def _alerts_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/patients/{t.patient_id}/alerts", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(FLAG, S, collection=True)
async def _alert_worklist(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/alerts", headers=caller.headers)
    body = body_of(r) if _ok(r) else {}
    return Outcome(r, t.id in {a.get("id") for a in body.get("alerts", [])})


@probe(FLAG, UPD)
async def _alert_acknowledge(world: World, caller: Caller, t: Target) -> Outcome:
    note = f"seen by probe {next_case()}"
    async with setup_uow(world.db) as s:  # reopen it: acknowledging an acknowledged alert changes nothing
        await s.execute(
            update(Alert)
            .where(Alert.id == t.id)
            .values(
                status=AlertStatus.OPEN, acknowledged_at=None, acknowledged_by_user_id=None, ack_note=None
            )
        )
    r = await world.client.post(
        f"{API}/alerts/{t.id}/acknowledge", json={"note": note}, headers=caller.headers
    )
    async with setup_uow(world.db) as s:
        stored = (await s.execute(select(Alert.ack_note).where(Alert.id == t.id))).scalar_one()
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, stored == note)


absent(
    FLAG,
    C,
    "POST",
    f"{API}/patients/{{patient_id}}/alerts",
    reason="the rule engine opens alerts from readings",
)
absent(FLAG, D, "DELETE", f"{API}/alerts/{{id}}", reason="alerts are resolved, never deleted")
absent(FLAG, E, "GET", f"{API}/alerts/$export", reason="alerts leave in the patient's export")

# ---- Goal (per-patient targets) ---------------------------------------------------------------------------


@probe(GOAL, R)
async def _rules_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/patients/{t.patient_id}/rules", headers=caller.headers)
    return Outcome(r, _ok(r) and _marker("Goal", t.patient_id or 0) in r.text)


@probe(GOAL, UPD)
async def _rule_override(world: World, caller: Caller, t: Target) -> Outcome:
    reason = f"probe target change {next_case()}"
    r = await world.client.put(
        f"{API}/patients/{t.patient_id}/rules/{RULE}",
        json={"params": {"below": 87}, "reason": reason},
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        made = (
            await s.execute(select(ThresholdOverride.id).where(ThresholdOverride.reason == reason))
        ).first() is not None
        # Put the world's marked override back in force for the cases that read it.
        await s.execute(
            update(ThresholdOverride)
            .where(ThresholdOverride.patient_id == t.patient_id, ThresholdOverride.effective_to.is_(None))
            .values(effective_to=utc_now())
        )
        await s.execute(
            update(ThresholdOverride)
            .where(ThresholdOverride.reason == _marker("Goal", t.patient_id or 0))
            .values(effective_to=None)
        )
    return Outcome(r, _ok(r) and reason in r.text, made)


absent(GOAL, S, "GET", f"{API}/rules", reason="targets are read per patient")
absent(
    GOAL, C, "POST", f"{API}/patients/{{patient_id}}/rules", reason="PUT sets a target (create or replace)"
)
absent(
    GOAL,
    D,
    "DELETE",
    f"{API}/patients/{{patient_id}}/rules/{RULE}",
    reason="a PUT with enabled/params resets",
)
absent(GOAL, E, "GET", f"{API}/patients/{{patient_id}}/rules/$export", reason="in the patient's export")

# ---- RpmTime ----------------------------------------------------------------------------------------------


@probe(TIME, C)
async def _log_time(world: World, caller: Caller, t: Target) -> Outcome:
    note = f"probe call {next_case()}"
    r = await world.client.post(
        f"{API}/patients/{t.patient_id}/time",
        json={"kind": "call", "minutes": 1, "note": note},
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        made = (await s.execute(select(TimeEntry.id).where(TimeEntry.note == note))).first() is not None
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, made)


absent(TIME, R, "GET", f"{API}/patients/{{patient_id}}/time", reason="minutes are read in the billing facts")
absent(TIME, S, "GET", f"{API}/time", reason="minutes are summed in the billing worklist")
absent(TIME, UPD, "PATCH", f"{API}/patients/{{patient_id}}/time/{{id}}", reason="logged time is not edited")
absent(
    TIME, D, "DELETE", f"{API}/patients/{{patient_id}}/time/{{id}}", reason="logged time is billing evidence"
)
absent(TIME, E, "GET", f"{API}/patients/{{patient_id}}/time/$export", reason="no export of logged time")

# ---- RpmBilling -------------------------------------------------------------------------------------------


@probe(BILL, S, collection=True)
async def _billing_worklist(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/billing", headers=caller.headers)
    return Outcome(r, _ok(r) and t.patient_id in ids_in(body_of(r), "patient_id"))


absent(BILL, R, "GET", f"{API}/billing/{{patient_id}}", reason="the worklist is the only view of billing")
absent(BILL, C, "POST", f"{API}/billing", reason="lines are derived from readings and time, not entered")
absent(BILL, UPD, "PATCH", f"{API}/billing/{{patient_id}}", reason="lines are derived, not edited")
absent(BILL, D, "DELETE", f"{API}/billing/{{patient_id}}", reason="lines are derived, not stored")
absent(BILL, E, "GET", f"{API}/billing/$export", reason="no billing export route yet")
