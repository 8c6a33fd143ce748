"""Regression tests for the security findings of issue 7 ("One door"), on SQLite and PostgreSQL: each
asserts what an attacker or a confused user would see, through the real pages and API."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
from sqlalchemy import func, select

from telecare.audit.models import AuditEntry
from telecare.auth import sessions
from telecare.auth.principal import system_principal
from telecare.config import Settings
from telecare.core.db import Database
from telecare.identity import service
from telecare.identity.models import Patient, Role, User
from telecare.monitoring.models import DeviceKey
from tests.factories import (
    LOGIN_CSRF_COOKIE,
    PASSWORD,
    Account,
    add_to_care_team,
    bearer,
    login_post,
    make_device,
    make_device_key,
    make_nightscout_secret,
    make_org,
    make_patient,
    make_user,
    token_for,
    web_login,
)

API = "/api/v1"


async def _count(db: Database, model: Any, *where: Any) -> int:
    async with db.unit_of_work() as s:
        return int((await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


async def _entries(db: Database, *where: Any) -> list[AuditEntry]:
    async with db.unit_of_work() as s:
        return list((await s.execute(select(AuditEntry).where(*where).order_by(AuditEntry.id))).scalars())


# ---- account creation: no role wider than the creator's --------------------------------------------------


async def test_an_admin_cannot_create_an_account_that_reaches_clinical_data(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    admin = await make_user(db, org, Role.ADMIN)
    headers = bearer(await token_for(db, admin, ["user/User.cruds"]))
    for role in ("physician", "nurse", "coordinator", "patient"):
        email = f"new-{role}@example.org"
        body = {"email": email, "display_name": "New", "role": role, "password": "a long enough password"}
        r = await client.post(f"{API}/users", json=body, headers=headers)
        assert r.status_code == 403, (role, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in r.json()["errors"]] == ["role"]
        assert await _count(db, User, User.email == email) == 0
    # Within the admin's own reach it works, and is audited.
    body = {"email": "analyst@example.org", "display_name": "A", "role": "informatics", "password": "x" * 14}
    r = await client.post(f"{API}/users", json=body, headers=headers)
    assert r.status_code == 201, r.text
    made = await _entries(
        db, AuditEntry.resource_type == "User", AuditEntry.resource_id == str(r.json()["id"])
    )
    assert [(e.action, e.actor_user_id) for e in made] == [("create", admin.user_id)]


async def test_the_admin_page_offers_only_roles_the_admin_may_grant(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    admin = await make_user(db, org, Role.ADMIN)
    csrf = await web_login(client, admin)
    form = await client.get("/admin/users/new")
    offered = re.findall(r'<option value="([a-z]+)"', form.text)
    assert offered == ["informatics", "admin"]
    r = await client.post(
        "/admin/users",
        data={
            "email": "doc@example.org",
            "display_name": "Doc",
            "role": "physician",
            "password": "a long enough password",
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 403
    assert "beyond your own" in r.text
    assert await _count(db, User, User.email == "doc@example.org") == 0


async def test_the_operator_creates_clinical_accounts_as_the_audited_system(db: Database) -> None:
    org = await make_org(db)
    async with db.unit_of_work() as s:
        user = await service.create_user(
            s,
            system_principal(org),
            email="md@example.org",
            role=Role.PHYSICIAN,
            display_name="MD",
            password=None,
        )
    (entry,) = await _entries(db, AuditEntry.resource_type == "User", AuditEntry.resource_id == str(user.id))
    assert (entry.actor_kind, entry.actor_role, entry.actor_user_id) == ("system", "system", None)


async def test_renaming_a_user_is_audited(client: httpx.AsyncClient, db: Database) -> None:
    org = await make_org(db)
    admin = await make_user(db, org, Role.ADMIN)
    nurse = await make_user(db, org, Role.NURSE)
    headers = bearer(await token_for(db, admin, ["user/User.cruds"]))
    r = await client.patch(
        f"{API}/users/{nurse.user_id}", json={"display_name": "Nurse Renamed"}, headers=headers
    )
    assert r.status_code == 200, r.text
    entries = await _entries(
        db, AuditEntry.resource_type == "User", AuditEntry.resource_id == str(nurse.user_id)
    )
    assert [(e.action, e.actor_user_id, e.detail) for e in entries][-1] == (
        "update",
        admin.user_id,
        {"fields": ["display_name"]},
    )


# ---- patients edit contact details, not identity --------------------------------------------------------


async def test_a_patient_cannot_change_their_legal_name(client: httpx.AsyncClient, db: Database) -> None:
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert patient.patient_id
    headers = bearer(await token_for(db, patient, ["patient/Patient.ru"]))
    r = await client.patch(
        f"{API}/patients/{patient.patient_id}", json={"family_name": "Someone Else"}, headers=headers
    )
    assert r.status_code == 403, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["family_name"]
    async with db.unit_of_work() as s:
        stored = await s.get(Patient, patient.patient_id)
        assert stored is not None
        assert stored.family_name != "Someone Else"
    # Contact details are theirs to change.
    r = await client.patch(
        f"{API}/patients/{patient.patient_id}", json={"phone": "+12155550123"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "+12155550123"


# ---- sign-in: login CSRF, one message, TOTP lockout, break-the-glass lockout ----------------------------


async def test_login_refuses_a_post_without_the_forms_token_or_from_another_site(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    creds = {"email": patient.email, "password": PASSWORD}
    # A cross-site page posting the attacker's credentials has neither the cookie nor the token.
    r = await client.post("/login", data=creds)
    assert r.status_code == 403
    assert "tc_session" not in r.cookies
    await client.get("/login")
    token = client.cookies[LOGIN_CSRF_COOKIE]
    r = await client.post("/login", data={**creds, "csrf_token": "forged" + token[6:]})
    assert r.status_code == 403
    token = client.cookies[LOGIN_CSRF_COOKIE]  # each answer comes with a fresh form and token
    r = await client.post(
        "/login", data={**creds, "csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    assert "tc_session" not in r.cookies
    token = client.cookies[LOGIN_CSRF_COOKIE]
    r = await client.post(
        "/login", data={**creds, "csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert r.status_code == 403
    # Under no-referrer a browser sends `Origin: null` from our own form: the token decides.
    token = client.cookies[LOGIN_CSRF_COOKIE]
    r = await client.post(
        "/login",
        data={**creds, "csrf_token": token},
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code == 303
    assert "tc_session" in r.cookies


def _error_of(html: str) -> str:
    found = re.search(r'<p class="error" role="alert" id="login-error">([^<]*)</p>', html)
    assert found, html
    return found.group(1)


async def test_a_locked_account_and_an_unknown_email_get_the_same_answer(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    for _ in range(settings.login_max_failures):
        await login_post(client, {"email": patient.email, "password": "not the password"})
    locked = await login_post(client, {"email": patient.email, "password": "not the password"})
    unknown = await login_post(client, {"email": "nobody@example.org", "password": "not the password"})
    wrong = await login_post(client, {"email": "nobody@example.org", "password": "another guess"})
    assert locked.status_code == unknown.status_code == wrong.status_code == 401
    assert _error_of(locked.text) == _error_of(unknown.text) == _error_of(wrong.text)


async def _password_step(client: httpx.AsyncClient, account: Account) -> str:
    r = await login_post(client, {"email": account.email, "password": account.password})
    assert r.status_code == 303, r.text
    page = await client.get("/login/totp")
    if page.status_code == 303:
        page = await client.get(page.headers["location"])
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_wrong_totp_codes_lock_the_account(app_with: Any, db: Database, settings: Settings) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    assert nurse.totp_secret
    client = await app_with(totp_rate_per_user_per_minute=1000)
    right = sessions.current_totp(nurse.totp_secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    async with client:
        csrf = await _password_step(client, nurse)
        for n in range(settings.totp_max_failures):
            r = await client.post("/login/enrol", data={"code": wrong, "csrf_token": csrf})
            assert r.status_code == 401, n
        # Locked: the pending session is gone and even the right code and password are refused.
        r = await client.post("/login/enrol", data={"code": right, "csrf_token": csrf})
        assert r.status_code in (401, 303)
        assert (await client.get(f"{API}/me")).status_code == 401
        client.cookies.clear()
        r = await login_post(client, {"email": nurse.email, "password": nurse.password})
        assert r.status_code == 401
    async with db.unit_of_work() as s:
        user = await s.get(User, nurse.user_id)
        assert user is not None
        assert user.locked_until is not None
    lockouts = await _entries(db, AuditEntry.action == "login", AuditEntry.actor_user_id == nurse.user_id)
    assert any(e.detail == {"step": "totp_lockout"} for e in lockouts)


async def test_wrong_break_glass_passwords_lock_the_account_and_end_the_session(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    org = await make_org(db)
    doctor = await make_user(db, org, Role.PHYSICIAN)
    patient = await make_patient(db, org)
    csrf = await web_login(client, doctor)
    body = {"reason": "unconscious patient in the ED", "password": "not my password"}
    for n in range(settings.login_max_failures):
        assert (await client.get(f"{API}/me")).status_code == 200, n
        r = await client.post(
            f"{API}/patients/{patient}/break-glass", json=body, headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 403, (n, r.text)
    # The fifth wrong password locked the account: the session is over, and signing in is refused.
    assert (await client.get(f"{API}/me")).status_code == 401
    client.cookies.clear()
    r = await login_post(client, {"email": doctor.email, "password": doctor.password})
    assert r.status_code == 401
    denied = await _entries(db, AuditEntry.resource_type == "BreakGlass", AuditEntry.outcome == "denied")
    assert len(denied) == settings.login_max_failures
    assert {e.patient_id for e in denied} == {patient}


# ---- device credentials ---------------------------------------------------------------------------------


async def test_a_coordinator_cannot_mint_a_key_for_a_patients_device(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    coordinator = await make_user(db, org, Role.COORDINATOR)
    patient = await make_patient(db, org)
    assert isinstance(patient, int)
    in_use, _ = await make_device(db, org, patient_id=patient, device_type="scale")
    spare, _ = await make_device(db, org)
    headers = bearer(await token_for(db, coordinator, ["user/DeviceKey.cd"]))
    r = await client.post(
        f"{API}/monitoring/device-keys", params={"device_id": in_use, "name": "x"}, headers=headers
    )
    assert r.status_code == 403, r.text
    assert await _count(db, DeviceKey) == 0
    # Provisioning a spare device (not yet anyone's) stays the coordinator's job.
    r = await client.post(
        f"{API}/monitoring/device-keys", params={"device_id": spare, "name": "kit"}, headers=headers
    )
    assert r.status_code == 201, r.text


async def test_a_disabled_patients_nightscout_secret_and_device_key_stop_working(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert patient.patient_id
    device, serial = await make_device(db, org, patient_id=patient.patient_id, device_type="scale")
    key = await make_device_key(db, org, [device])
    secret = await make_nightscout_secret(db, patient.patient_id)
    ns = {"api-secret": hashlib.sha1(secret.encode()).hexdigest()}
    assert (await client.get(f"{API}/entries.json", headers=ns)).status_code == 200
    async with db.unit_of_work() as s:
        await service.set_active(s, system_principal(org), user_id=patient.user_id, active=False)
    assert (await client.get(f"{API}/entries.json", headers=ns)).status_code == 401
    from telecare.monitoring import credentials

    credentials._key_cache.clear()  # another worker's cache expires within KEY_CACHE_SECONDS
    reading = {
        "device": serial,
        "measured_at": "2026-11-30T08:00:00Z",
        "kind": "weight",
        "value": 250,
        "unit": "kg",
    }
    r = await client.post(f"{API}/monitoring/readings", json=[reading], headers=bearer(key))
    assert r.status_code in (403, 422), r.text
    from telecare.monitoring.models import Reading

    assert await _count(db, Reading) == 0


# ---- FHIR answers a refused search like REST ------------------------------------------------------------


async def test_fhir_search_for_a_patient_out_of_reach_is_404_and_audited_naming_them(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    mine = await make_patient(db, org)
    theirs = await make_patient(db, org)
    assert isinstance(mine, int)
    assert isinstance(theirs, int)
    assert nurse.practitioner_id
    await add_to_care_team(db, patient_id=mine, practitioner_id=nurse.practitioner_id, org_id=org)
    headers = bearer(await token_for(db, nurse, ["user/Observation.rs"]))
    ok = await client.get("/fhir/R4/Observation", params={"patient": mine}, headers=headers)
    assert ok.status_code == 200
    r = await client.get("/fhir/R4/Observation", params={"patient": theirs}, headers=headers)
    assert r.status_code == 404, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    denied = await _entries(db, AuditEntry.outcome == "denied", AuditEntry.actor_user_id == nurse.user_id)
    assert [(e.resource_type, e.patient_id) for e in denied] == [("Observation", theirs)]


# ---- hosts, headers, API docs ---------------------------------------------------------------------------


async def test_a_forged_host_is_refused_before_any_redirect_is_built(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/patients/", headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert "evil.example" not in r.headers.get("location", "")
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_security_headers_are_on_a_413(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post(
        "/login", content=b"x" * (settings.max_body_bytes + 1), headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 413
    assert "content-security-policy" in r.headers
    assert r.headers["x-frame-options"] == "DENY" or "frame-ancestors" in r.headers["content-security-policy"]


async def test_api_docs_are_served_from_this_server(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sources
    assert all(s.startswith("/") for s in sources), sources
    for path in sources:
        assert (await client.get(path)).status_code == 200, path
    assert "<script>" not in r.text  # nothing inline for the CSP to refuse


async def test_api_docs_are_off_in_production(settings: Settings) -> None:
    from pydantic import SecretStr

    from telecare.app import create_app
    from telecare.config import Mode

    prod = settings.model_copy(
        update={
            "mode": Mode.PRODUCTION,
            "allowed_hosts": ["testserver"],
            "data_key": SecretStr("k" * 43),
        }
    )
    application = create_app(prod)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    ) as c:
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 200
