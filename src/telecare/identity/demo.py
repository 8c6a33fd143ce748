"""The deterministic demo organization loaded by `telecare demo` (and `make run` on an empty database).

All people are synthetic. Passwords and TOTP secrets are fixed so a newcomer can follow the README; the demo
organization is flagged `is_demo`, and `telecare demo totp` refuses users outside it."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit import service as audit
from telecare.audit.guard import GUARD
from telecare.audit.models import AuditAction, Purpose
from telecare.auth import sessions
from telecare.config import Settings
from telecare.core.time import utc_now
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

DEMO_SLUG = "riverbend-demo"
DEMO_DOMAIN = "riverbend.example"

# (role, email local part, display name, credentials, specialties, residence state)
ROLE_USERS = [
    (Role.PHYSICIAN, "dr.rivera", "Dr. Elena Rivera", "MD", ["Internal Medicine"], "PA"),
    (Role.NURSE, "nurse.okafor", "Grace Okafor", "RN", ["Remote Patient Monitoring"], "PA"),
    (Role.THERAPIST, "dr.lindqvist", "Dr. Jonas Lindqvist", "PsyD", ["Clinical Psychology"], "OH"),
    (Role.PHARMACIST, "pharm.nguyen", "Minh Nguyen", "PharmD", ["Ambulatory Care Pharmacy"], "NJ"),
    (Role.COORDINATOR, "coord.james", "Tasha James", "", [], None),
    (Role.INFORMATICS, "info.patel", "Ravi Patel", "", [], None),
    (Role.ADMIN, "admin", "Morgan Blake", "", [], None),
]
EXTRA_CLINICIANS = [
    (Role.PHYSICIAN, "dr.chen", "Dr. Wei Chen", "DO", ["Family Medicine"], "NY"),
    (Role.NURSE, "nurse.garcia", "Luis Garcia", "RN", ["Care Management"], "TX"),
]
STATES = ["PA", "NJ", "NY", "OH", "DE", "MD", "TX", "FL"]
GIVEN_F = [
    "Ava",
    "Maya",
    "Rosa",
    "Helen",
    "Priya",
    "Chloe",
    "Nora",
    "Fatima",
    "Lena",
    "Grace",
    "Ines",
    "June",
]
GIVEN_M = [
    "Liam",
    "Omar",
    "Hugo",
    "Samuel",
    "Diego",
    "Arjun",
    "Felix",
    "Tomas",
    "Ezra",
    "Malik",
    "Kenji",
    "Ivan",
]
FAMILY = [
    "Alvarez",
    "Brooks",
    "Castillo",
    "Dawson",
    "Ellison",
    "Fischer",
    "Greene",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Mensah",
    "Novak",
    "Ortega",
    "Price",
    "Quinn",
    "Rahman",
    "Sato",
    "Turner",
]
CITIES = {
    "PA": ("Philadelphia", "191"),
    "NJ": ("Camden", "081"),
    "NY": ("Albany", "122"),
    "OH": ("Columbus", "432"),
    "DE": ("Wilmington", "198"),
    "MD": ("Baltimore", "212"),
    "TX": ("Austin", "787"),
    "FL": ("Tampa", "336"),
}


def demo_password(local: str) -> str:
    return f"Demo-{local.replace('.', '-')}-2026"


def demo_totp_secret(email: str) -> str:
    # Fixed per email so the printed secrets stay valid across reloads of the demo.
    digest = hashlib.sha256(f"telecare-demo-totp:{email}".encode()).digest()
    return base64.b32encode(digest[:20]).decode()


def _licences(
    role: Role, credentials: str, home: str, today: date
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Realistic licence sets: physicians hold a home licence plus IMLC-issued ones; nurses hold an NLC
    multistate licence; the psychologist holds PSYPACT authority; one licence expires within 60 days."""
    issued = today - timedelta(days=900)
    licences: list[dict[str, object]] = []
    privileges: list[dict[str, object]] = []
    if role is Role.PHYSICIAN:
        licences.append(
            {
                "state": home,
                "license_type": credentials,
                "source": LicenseSource.STATE,
                "expires_on": today + timedelta(days=500),
            }
        )
        for i, state in enumerate(s for s in ("NJ", "OH", "MD", "DE") if s != home):
            licences.append(
                {
                    "state": state,
                    "license_type": credentials,
                    "source": LicenseSource.IMLC,
                    "expires_on": today + timedelta(days=45 if i == 0 else 400),
                }
            )
    elif role is Role.NURSE:
        licences.append(
            {
                "state": home,
                "license_type": "RN",
                "source": LicenseSource.STATE,
                "expires_on": today + timedelta(days=600),
            }
        )
        privileges.append(
            {"compact": Compact.NLC, "home_state": home, "expires_on": today + timedelta(days=600)}
        )
        if home == "PA":
            licences.append(
                {
                    "state": "NY",
                    "license_type": "RN",
                    "source": LicenseSource.STATE,
                    "expires_on": today + timedelta(days=300),
                }
            )
    elif role is Role.THERAPIST:
        licences.append(
            {
                "state": home,
                "license_type": "Psychologist",
                "source": LicenseSource.STATE,
                "expires_on": today + timedelta(days=700),
            }
        )
        privileges.append(
            {"compact": Compact.PSYPACT, "home_state": home, "expires_on": today + timedelta(days=700)}
        )
    elif role is Role.PHARMACIST:
        for state in (home, "PA", "NY"):
            licences.append(
                {
                    "state": state,
                    "license_type": "RPh",
                    "source": LicenseSource.STATE,
                    "expires_on": today + timedelta(days=365),
                }
            )
    for n, lic in enumerate(licences):
        lic.update(number=f"{lic['state']}-{credentials or 'LIC'}-{1000 + n}", issued_on=issued)
    for n, priv in enumerate(privileges):
        priv.update(number=f"{priv['compact']}-{2000 + n}".upper(), issued_on=issued)
    return licences, privileges


async def load(session: AsyncSession, settings: Settings, *, only_if_empty: bool = False) -> list[str] | None:
    existing = (
        await session.execute(select(Organization).where(Organization.slug == DEMO_SLUG))
    ).scalar_one_or_none()
    if existing is not None:
        return [f"demo organization already loaded (id {existing.id})", *_login_lines()]
    if only_if_empty and (await session.execute(select(func.count(Organization.id)))).scalar_one():
        return None
    # Synthetic patients written directly, not through actions: audited once below as a system import (the
    # Organization entry), so the audit guard (audit/guard.py) is told not to ask for an entry per patient.
    GUARD.exempt(session, "demo data load: synthetic patients, audited once as a system import")
    rng = random.Random(20261127)  # deterministic synthetic data
    today = utc_now().date()
    org = Organization(
        name="Riverbend Virtual Care (demo)",
        slug=DEMO_SLUG,
        is_demo=True,
        privacy_contact_email=f"privacy@{DEMO_DOMAIN}",
        timezone="America/New_York",
    )
    session.add(org)
    await session.flush()
    hasher = sessions.passwords(settings)
    practitioners: dict[str, Practitioner] = {}
    for role, local, name, creds, specialties, home in ROLE_USERS + EXTRA_CLINICIANS:
        email = f"{local}@{DEMO_DOMAIN}"
        user = User(
            org_id=org.id,
            email=email,
            role=role,
            display_name=name,
            password_hash=hasher.hash(demo_password(local)),
        )
        session.add(user)
        await session.flush()
        sessions.set_totp_secret(settings, user, demo_totp_secret(email))
        if role.is_clinician:
            npi = f"1{rng.randrange(10**8, 10**9)}"
            prac = Practitioner(
                org_id=org.id,
                user_id=user.id,
                npi=npi,
                credentials=creds,
                specialties=specialties,
                residence_state=home,
            )
            session.add(prac)
            await session.flush()
            practitioners[local] = prac
            licences, privileges = _licences(role, creds, home or "PA", today)
            for lic in licences:
                session.add(License(org_id=org.id, practitioner_id=prac.id, **lic))
            for priv in privileges:
                session.add(CompactPrivilege(org_id=org.id, practitioner_id=prac.id, **priv))
    patient_user = User(
        org_id=org.id,
        email=f"patient@{DEMO_DOMAIN}",
        role=Role.PATIENT,
        display_name="Ava Alvarez",
        password_hash=hasher.hash(demo_password("patient")),
    )
    session.add(patient_user)
    await session.flush()
    teams = [
        ("dr.rivera", "primary physician"),
        ("nurse.okafor", "RPM nurse"),
        ("dr.chen", "primary physician"),
        ("nurse.garcia", "care manager"),
        ("dr.lindqvist", "therapist"),
        ("pharm.nguyen", "pharmacist"),
    ]
    for i in range(50):
        female = i % 2 == 0
        given = (GIVEN_F if female else GIVEN_M)[i % 12]
        family = FAMILY[(i * 7) % len(FAMILY)]
        if i == 0:
            given, family = "Ava", "Alvarez"
        state = STATES[i % len(STATES)]
        city, zip3 = CITIES[state]
        birth = date(1940 + rng.randrange(0, 60), rng.randrange(1, 13), rng.randrange(1, 29))
        patient = Patient(
            org_id=org.id,
            user_id=patient_user.id if i == 0 else None,
            mrn=f"RB{10001 + i}",
            given_name=given,
            family_name=family,
            birth_date=birth,
            sex=Sex.FEMALE if female else Sex.MALE,
            email=f"{given.lower()}.{family.lower()}{i}@mail.example",
            phone=f"+1 555 01{i:02d} {1000 + i}",
            address_line=f"{100 + i * 3} Elm Street",
            city=city,
            state=state,
            postal_code=f"{zip3}{i % 100:02d}",
            preferred_language="es" if i % 9 == 4 else "en",
            emergency_contact_name=f"{GIVEN_M[(i + 3) % 12]} {family}",
            emergency_contact_phone=f"+1 555 02{i:02d} {2000 + i}",
            emergency_contact_relationship="spouse",
        )
        session.add(patient)
        await session.flush()
        # Most patients have a physician and nurse; a few are left without a care team on purpose.
        if i % 10 != 9:
            physician, nurse = (teams[0], teams[1]) if i % 2 == 0 else (teams[2], teams[3])
            for local, role_name in (physician, nurse):
                session.add(
                    CareTeamMember(
                        org_id=org.id,
                        patient_id=patient.id,
                        practitioner_id=practitioners[local].id,
                        role=role_name,
                    )
                )
            if i % 5 == 0:
                session.add(
                    CareTeamMember(
                        org_id=org.id,
                        patient_id=patient.id,
                        practitioner_id=practitioners["dr.lindqvist"].id,
                        role=teams[4][1],
                    )
                )
            if i % 3 == 0:
                session.add(
                    CareTeamMember(
                        org_id=org.id,
                        patient_id=patient.id,
                        practitioner_id=practitioners["pharm.nguyen"].id,
                        role=teams[5][1],
                    )
                )
    await session.flush()
    from telecare.scheduling.demo import seed_demo_visits

    await seed_demo_visits(session, org.id)
    from telecare.messaging.demo import seed_demo_messaging

    await seed_demo_messaging(session, org.id)
    from telecare.questionnaires.demo import seed_demo_questionnaires

    await seed_demo_questionnaires(session, org.id)
    from telecare.education.demo import seed_demo_education

    await seed_demo_education(session, org.id)
    await audit.record(
        session,
        audit.SYSTEM_ACTOR,
        key=settings.secret("audit_hmac_key").encode(),
        action=AuditAction.CREATE,
        resource_type="Organization",
        resource_id=org.id,
        org_id=org.id,
        purpose=Purpose.SYSTEM,
        detail={"demo": True, "patients": 50, "via": "demo_import"},
    )
    return [f"demo organization loaded (id {org.id}): 50 synthetic patients", *_login_lines()]


def _login_lines() -> list[str]:
    lines = [
        "",
        "Demo logins (synthetic data only):",
        f"  {'role':<12} {'email':<34} {'password':<26} TOTP secret",
    ]
    for role, local, *_ in ROLE_USERS:
        email = f"{local}@{DEMO_DOMAIN}"
        lines.append(f"  {role:<12} {email:<34} {demo_password(local):<26} {demo_totp_secret(email)}")
    email = f"patient@{DEMO_DOMAIN}"
    lines.append(f"  {'patient':<12} {email:<34} {demo_password('patient'):<26} (patients: no TOTP)")
    lines += [
        "",
        "Staff sign in with a 6-digit TOTP code: add the secret to an authenticator app, or run",
        "  .venv/bin/telecare demo totp dr.rivera@riverbend.example",
        "to print the current code. The first staff sign-in shows the enrolment QR code.",
    ]
    return lines
