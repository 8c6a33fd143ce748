"""Plain typed factories. Each opens its own unit of work on the test database.

Factories write rows directly, not through actions, so their units of work are exempt from the audit guard
(telecare/audit/guard.py): open them with `setup_uow(db)`. A test that checks an action opens its own unit
of work with `db.unit_of_work()` and stays guarded."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx

from telecare.audit.guard import GUARD
from telecare.auth import service as auth_service
from telecare.auth import sessions
from telecare.auth.principal import system_principal
from telecare.core.db import Database, UnitOfWork
from telecare.core.time import utc_now
from telecare.identity import service
from telecare.identity.models import (
    CareTeamMember,
    Compact,
    CompactPrivilege,
    License,
    LicenseSource,
    Organization,
    Patient,
    Practitioner,
    Role,
    Sex,
    User,
)

PASSWORD = "correct horse battery staple"
_seq = itertools.count(1)


@contextlib.asynccontextmanager
async def setup_uow(db: Database, reason: str = "test set-up") -> AsyncIterator[UnitOfWork]:
    """A unit of work for test set-up: it writes rows behind the actions' back on purpose, so the audit
    guard does not account for it."""
    async with db.unit_of_work() as uow:
        GUARD.exempt(uow, reason)
        yield uow


@dataclass
class Account:
    user_id: int
    org_id: int
    email: str
    role: Role
    password: str
    totp_secret: str | None
    practitioner_id: int | None = None
    patient_id: int | None = None


async def make_org(
    db: Database,
    *,
    name: str = "Clinic",
    privacy_email: str | None = "privacy@clinic.test",
    demo: bool = False,
) -> int:
    async with setup_uow(db) as s:
        n = next(_seq)
        org = Organization(
            name=f"{name} {n}", slug=f"org-{n}", privacy_contact_email=privacy_email, is_demo=demo
        )
        s.add(org)
        await s.flush()
        return org.id


async def make_user(
    db: Database,
    org_id: int,
    role: Role,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    residence_state: str | None = "PA",
) -> Account:
    async with setup_uow(db) as s:
        n = next(_seq)
        email = email or f"{role}{n}@org{org_id}.test"
        user = await service.create_user(
            s,
            system_principal(org_id),
            email=email,
            role=role,
            display_name=f"{role.title()} {n}",
            password=password,
        )
        secret = sessions.totp_secret(db.settings, user)
        practitioner_id = None
        if role.is_clinician:
            prac = Practitioner(
                org_id=org_id,
                user_id=user.id,
                npi=f"{1000000000 + n}",
                credentials="MD",
                specialties=["Internal Medicine"],
                residence_state=residence_state,
            )
            s.add(prac)
            await s.flush()
            practitioner_id = prac.id
        return Account(user.id, org_id, email, role, password, secret, practitioner_id)


async def make_patient(
    db: Database, org_id: int, *, state: str = "PA", with_login: bool = False, **fields: Any
) -> Account | int:
    async with setup_uow(db) as s:
        n = next(_seq)
        user_id = None
        email = f"patient{n}@org{org_id}.test"
        if with_login:
            user = await service.create_user(
                s,
                system_principal(org_id),
                email=email,
                role=Role.PATIENT,
                display_name=f"Patient {n}",
                password=PASSWORD,
            )
            user_id = user.id
        values: dict[str, Any] = {
            "mrn": f"MRN{n:05d}",
            "given_name": f"Given{n}",
            "family_name": f"Family{n}",
            "birth_date": date(1960, 1, 1) + timedelta(days=n),
            "sex": Sex.FEMALE,
            "state": state,
            "email": email,
            "phone": f"+1 555 010 {1000 + n}",
        }
        values.update(fields)
        patient = Patient(org_id=org_id, user_id=user_id, **values)
        s.add(patient)
        await s.flush()
        if with_login:
            assert user_id is not None
            return Account(user_id, org_id, email, Role.PATIENT, PASSWORD, None, patient_id=patient.id)
        return patient.id


async def add_to_care_team(db: Database, *, patient_id: int, practitioner_id: int, org_id: int) -> None:
    async with setup_uow(db) as s:
        s.add(CareTeamMember(org_id=org_id, patient_id=patient_id, practitioner_id=practitioner_id))


async def add_license(
    db: Database,
    *,
    practitioner_id: int,
    org_id: int,
    state: str,
    issued_on: date | None = None,
    expires_on: date | None = None,
    source: LicenseSource = LicenseSource.STATE,
    license_type: str = "MD",
) -> None:
    today = utc_now().date()
    async with setup_uow(db) as s:
        s.add(
            License(
                org_id=org_id,
                practitioner_id=practitioner_id,
                state=state,
                license_type=license_type,
                number=f"{state}-{next(_seq)}",
                issued_on=issued_on or today - timedelta(days=365),
                expires_on=expires_on or today + timedelta(days=365),
                source=source,
            )
        )


async def add_privilege(
    db: Database,
    *,
    practitioner_id: int,
    org_id: int,
    compact: Compact,
    home_state: str,
    expires_on: date | None = None,
) -> None:
    today = utc_now().date()
    async with setup_uow(db) as s:
        s.add(
            CompactPrivilege(
                org_id=org_id,
                practitioner_id=practitioner_id,
                compact=compact,
                home_state=home_state,
                number=f"C-{next(_seq)}",
                issued_on=today - timedelta(days=100),
                expires_on=expires_on or today + timedelta(days=365),
            )
        )


async def token_for(db: Database, account: Account, scopes: list[str] | None = None) -> str:
    async with setup_uow(db) as s:
        user = await s.get(User, account.user_id)
        assert user is not None
        _, token = await auth_service.issue_token(
            s,
            system_principal(user.org_id),
            user_id=user.id,
            scopes=scopes or ["user/*.cruds"],
            name="test",
            expires_in_days=None,
        )
        return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


LOGIN_CSRF_COOKIE = "tc_login_csrf"


async def login_post(client: httpx.AsyncClient, data: dict[str, str]) -> httpx.Response:
    """POST /login as the sign-in form does: with the login CSRF token of the form's cookie (fetched with
    the form when the client holds none yet)."""
    token = client.cookies.get(LOGIN_CSRF_COOKIE)
    if token is None:
        await client.get("/login")
        token = client.cookies.get(LOGIN_CSRF_COOKIE)
    assert token, "GET /login set no login CSRF cookie"
    return await client.post("/login", data={**data, "csrf_token": token})


async def web_login(client: httpx.AsyncClient, account: Account) -> str:
    """Sign in through the real pages (password, then TOTP for staff); returns the CSRF token."""
    import re

    r = await login_post(client, {"email": account.email, "password": account.password})
    assert r.status_code == 303, r.text
    if account.role is not Role.PATIENT:
        assert account.totp_secret is not None
        page = await client.get(r.headers["location"])
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf, page.text
        # The app's clock, not the wall clock: tests that freeze or advance it must get a code for that time.
        code = sessions.current_totp(account.totp_secret)
        r = await client.post(r.headers["location"], data={"code": code, "csrf_token": csrf.group(1)})
        assert r.status_code == 303, r.text
    home = await client.get("/home")
    assert home.status_code == 200, home.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
    assert csrf
    return csrf.group(1)


# ---- remote patient monitoring -----------------------------------------------------------------------


async def make_device(
    db: Database,
    org_id: int,
    *,
    patient_id: int | None = None,
    serial: str | None = None,
    device_type: str = "bp_cuff",
    started_at: Any = None,
) -> tuple[int, str]:
    """A registered device, assigned to `patient_id` from `started_at` (default: 400 days ago)."""
    from telecare.monitoring.ingest import normalise_serial
    from telecare.monitoring.models import Device, DeviceAssignment

    serial = serial or f"SN-{next(_seq):06d}"
    async with setup_uow(db) as s:
        device = Device(
            org_id=org_id,
            device_type=device_type,
            manufacturer="Acme Medical",
            model="Model 1",
            serial=serial,
            serial_norm=normalise_serial(serial),
        )
        s.add(device)
        await s.flush()
        if patient_id is not None:
            s.add(
                DeviceAssignment(
                    org_id=org_id,
                    device_id=device.id,
                    patient_id=patient_id,
                    started_at=started_at or utc_now() - timedelta(days=400),
                )
            )
        return device.id, serial


async def make_device_key(db: Database, org_id: int, device_ids: list[int]) -> str:
    from telecare.monitoring import devices

    async with setup_uow(db) as s:
        _, key = await devices.issue_device_key(
            s, org_id=org_id, device_ids=device_ids, name="test", created_by_user_id=None
        )
        return key


async def enrol_rpm(
    db: Database,
    org_id: int,
    patient_id: int,
    practitioner_id: int,
    *,
    programs: tuple[str, ...] = ("hypertension",),
    started_on: date | None = None,
) -> int:
    from telecare.monitoring.models import RpmEnrolment

    async with setup_uow(db) as s:
        enrolment = RpmEnrolment(
            org_id=org_id,
            patient_id=patient_id,
            ordering_practitioner_id=practitioner_id,
            programs=list(programs),
            consent_at=utc_now() - timedelta(days=1),
            consent_method="verbal",
            started_on=started_on or utc_now().date(),
        )
        s.add(enrolment)
        await s.flush()
        return enrolment.id


async def make_nightscout_secret(db: Database, patient_id: int) -> str:
    from telecare.monitoring import devices

    async with setup_uow(db) as s:
        patient = await s.get(Patient, patient_id)
        assert patient is not None
        return await devices.issue_nightscout_secret(s, patient=patient)
