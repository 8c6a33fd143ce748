"""Beyond the role matrix, on the same world (both backends): a patient's token never sees another patient
anywhere; token scopes only narrow what the role allows; minimum necessary by field and by resource
(coordinators: contact and scheduling data only; admins and informatics: no clinical content)."""

from __future__ import annotations

from typing import Any

import pytest

from telecare.access.policy import POLICY, Action, Resource, allowed_reach, role_covers
from telecare.auth.principal import Principal
from telecare.identity.models import Role
from tests.access.matrix_kit import CLINICAL, PROBES, World, caller_for, leaks
from tests.factories import bearer, token_for

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

# Demographics that identify the patient plus contact data (45 CFR 164.502(b): what scheduling needs).
COORDINATOR_PATIENT_FIELDS = {
    "id",
    "mrn",
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "email",
    "phone",
    "address_line",
    "city",
    "state",
    "postal_code",
    "preferred_language",
    "emergency_contact_name",
    "emergency_contact_phone",
    "emergency_contact_relationship",
}
# Resource types a coordinator may hold grants on: contact, directory and scheduling data. Later domains'
# scheduling resources are named here in advance; any other resource type (notes, observations,
# medications ...) granted to coordinators fails the test.
COORDINATOR_RESOURCES = {
    "Patient",
    "CareTeam",
    "Practitioner",
    "User",
    "Aggregate",
    "Appointment",
    "Slot",
    "Schedule",
    "Encounter",  # visit status, check-in and licensure flags for re-assignment; no clinical content
    "BillingLine",  # issue 3: coordinators review and adjust proposed billing lines with a reason
    "Survey",  # satisfaction surveys feed the coordinator dashboards
    "ConsentText",  # the telehealth consent wording patients accept
    "Device",  # device logistics: registry and assignment (no readings)
    "DeviceKey",  # gateway credentials for device integrations
    "Inbox",  # runs team inboxes: membership and response-time targets, never message content
    "ConsultQueue",  # runs e-consult specialty queues: membership and turnaround, never consult content
}
# Administration without clinical content; informatics: aggregates (and the staff directory, own account).
ADMIN_RESOURCES = {
    "Practitioner",
    "User",
    "ApiToken",
    "AuditEvent",
    "Aggregate",
    "BreakGlass",
    "Schedule",  # organization settings: visit types, availability
    "ConsentText",  # publishing consent versions
    "DeviceKey",  # integration credentials
    "Inbox",  # team inboxes and their members: no message content
    "ConsultQueue",  # e-consult specialty queues and their specialists: no consult content
}
INFORMATICS_RESOURCES = {
    "Practitioner",
    "User",
    "Aggregate",
    "Schedule",  # visit types and availability: organization configuration that utilization reports need
    "ConsentText",  # the published consent wording (the same text every patient is shown)
    "Inbox",  # which teams exist and their response-time targets (for response-time reports)
    "ConsultQueue",  # which specialty queues exist and their turnaround targets
}


def _granted(role: Role) -> set[str]:
    return {str(resource) for resource, roles in POLICY.items() if roles.get(role)}


def test_policy_minimum_necessary_by_resource_type() -> None:
    assert _granted(Role.COORDINATOR) <= COORDINATOR_RESOURCES
    assert _granted(Role.ADMIN) <= ADMIN_RESOURCES
    assert _granted(Role.INFORMATICS) <= INFORMATICS_RESOURCES
    # Coordinators may not export a chart: the export bundle carries every domain's clinical sections.
    assert allowed_reach(Role.COORDINATOR, Resource.PATIENT, Action.EXPORT) is None


def test_who_may_hand_out_whose_credentials() -> None:
    assert all(role_covers(role, role) for role in Role)
    assert role_covers(Role.ADMIN, Role.INFORMATICS)
    for role in (*CLINICAL, Role.COORDINATOR, Role.PATIENT):
        assert not role_covers(Role.ADMIN, role), role
    assert not role_covers(Role.PHYSICIAN, Role.ADMIN)


@MODULE_LOOP
async def test_patient_token_never_sees_another_patient(world: World) -> None:
    me = caller_for(world, Role.PATIENT)
    client = world.client
    own = world.a.own.id
    others = [p for p in world.patients() if p.id != own]
    bodies: list[Any] = []
    for path in ("/api/v1/patients", "/api/v1/practitioners", "/api/v1/break-glass", "/api/v1/tokens"):
        r = await client.get(path, headers=me.headers)
        assert r.status_code == 403, (path, r.text)
        bodies.append(r)
    for other in others:
        for path in ("", "/care-team", "/$export"):
            r = await client.get(f"/api/v1/patients/{other.id}{path}", headers=me.headers)
            assert r.status_code == 404, (path, r.text)
            bodies.append(r)
        r = await client.get("/api/v1/audit-events", params={"patient_id": other.id}, headers=me.headers)
        assert r.status_code == 200
        assert r.json() == []
        r = await client.patch(f"/api/v1/patients/{other.id}", json={"city": "Elsewhere"}, headers=me.headers)
        assert r.status_code == 404
    # What the patient may see is about them only.
    r = await client.get(f"/api/v1/patients/{own}/$export", headers=me.headers)
    assert r.status_code == 200
    assert r.json()["patient"]["id"] == own
    r = await client.get("/api/v1/audit-events", params={"limit": 1000}, headers=me.headers)
    assert r.status_code == 200
    assert r.json()
    assert {e["patient_id"] for e in r.json()} == {own}
    assert me.account is not None
    r = await client.get(f"/api/v1/users/{me.account.user_id}", headers=me.headers)
    assert r.json()["id"] == me.account.user_id
    bodies += [r, await client.get("/api/v1/users", headers=me.headers)]
    assert bodies[-1].status_code == 403
    for response in bodies:
        assert leaks(world, me, PROBES[(Resource.PATIENT, Action.READ)], response) == []


@MODULE_LOOP
@pytest.mark.parametrize("role", [*CLINICAL, Role.COORDINATOR])
async def test_scopes_narrow_and_never_widen(world: World, role: Role) -> None:
    account = world.a.accounts[role]
    client = world.client
    own = world.a.own
    read_only = bearer(await token_for(world.db, account, ["user/Patient.r"]))
    r = await client.get(f"/api/v1/patients/{own.id}", headers=read_only)
    assert r.status_code == 200
    assert r.json()["mrn"] == own.mrn
    refused = [
        await client.get("/api/v1/patients", params={"mrn": own.mrn}, headers=read_only),
        await client.patch(f"/api/v1/patients/{own.id}", json={"city": "Scoped"}, headers=read_only),
        await client.get(f"/api/v1/patients/{own.id}/$export", headers=read_only),  # export needs r and s
        await client.get(f"/api/v1/patients/{own.id}/care-team", headers=read_only),  # another resource type
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert own.mrn not in response.text
        assert own.family_name not in response.text
    # A scope for another resource type opens nothing here; scopes never widen the role's grants.
    other_type = bearer(await token_for(world.db, account, ["user/Observation.cruds"]))
    assert (await client.get(f"/api/v1/patients/{own.id}", headers=other_type)).status_code == 403
    everything = bearer(await token_for(world.db, account, ["user/*.cruds"]))
    r = await client.get(f"/api/v1/patients/{world.a.other.id}", headers=everything)
    expected = 200 if role is Role.COORDINATOR else 404  # clinicians: not on their care team
    assert r.status_code == expected
    r = await client.get("/api/v1/tokens", headers=everything)
    assert r.status_code == 403


def test_scope_letters_come_only_from_the_permission_part() -> None:
    def principal(*scopes: str) -> Principal:
        return Principal(user_id=1, org_id=1, role=Role.PHYSICIAN, kind="token", scopes=frozenset(scopes))

    granular = principal("user/Patient.r?category=vital-signs")
    assert not granular.has_scope("Patient", "c")
    assert not granular.has_scope("Patient", "s")
    assert not granular.has_scope("Patient", "r")  # not enforced, so not honoured
    assert principal("user/Patient.rs").has_scope("Patient", "s")
    assert not principal("user/Patient.rs").has_scope("Patient", "u")
    assert not principal("user/Patients.r").has_scope("Patient", "r")
    assert principal("patient/*.r").has_scope("Observation", "r")


@MODULE_LOOP
async def test_coordinator_gets_contact_and_scheduling_fields_only(world: World) -> None:
    me = caller_for(world, Role.COORDINATOR)
    own = world.a.own.id
    r = await world.client.get(f"/api/v1/patients/{own}", headers=me.headers)
    assert r.status_code == 200
    assert set(r.json()) == COORDINATOR_PATIENT_FIELDS
    r = await world.client.get("/api/v1/patients", headers=me.headers)
    assert r.status_code == 200
    assert r.json()["items"]
    assert all(set(item) == COORDINATOR_PATIENT_FIELDS for item in r.json()["items"])
    r = await world.client.get(f"/api/v1/patients/{own}/care-team", headers=me.headers)
    assert r.status_code == 200
    assert {frozenset(m) for m in r.json()} == {
        frozenset({"id", "patient_id", "practitioner_id", "user_id", "display_name", "credentials", "role"})
    }
    r = await world.client.get(f"/api/v1/patients/{own}/$export", headers=me.headers)
    assert r.status_code == 403
    assert world.a.own.mrn not in r.text


@MODULE_LOOP
async def test_session_writes_need_the_csrf_token(world: World) -> None:
    session = dict(world.a.sessions[Role.COORDINATOR])
    own = world.a.own.id
    url = f"/api/v1/patients/{own}"
    without = {k: v for k, v in session.items() if k == "cookie"}
    wrong = without | {"x-csrf-token": "not-the-token"}
    for headers in (without, wrong):
        r = await world.client.patch(url, json={"city": "Forged"}, headers=headers)
        assert r.status_code == 403, r.text
    assert (await world.client.get(url, headers=without)).json()["city"] != "Forged"  # reads need no token
    r = await world.client.patch(url, json={"city": "Genuine"}, headers=session)
    assert r.status_code == 200
    assert r.json()["city"] == "Genuine"
