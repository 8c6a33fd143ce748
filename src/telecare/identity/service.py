"""Identity rules: organizations, users, patients, care teams, practitioners, CSV import. (Sign-in, TOTP and
API tokens are the `auth` domain's: auth/service.py.)"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access import service as access
from telecare.access.policy import Action, Reach, Resource
from telecare.audit import service as audit
from telecare.audit.models import AuditAction, Purpose
from telecare.auth import sessions
from telecare.auth.principal import Principal
from telecare.core.db import Database, as_uow
from telecare.core.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import (
    CareTeamMember,
    Organization,
    Patient,
    Practitioner,
    Role,
    User,
)
from telecare.identity.schemas import PatientCreate, PatientUpdate


class EmailTaken(Conflict):
    """A user with this email already exists."""

    code = "email_taken"
    title = "Email already registered"


class SlugTaken(Conflict):
    """Another organization uses this slug."""

    code = "slug_taken"
    title = "Slug already used"


class MrnTaken(Conflict):
    """The organization already has a patient with this MRN."""

    code = "mrn_taken"
    title = "MRN already registered"


def _db(session: AsyncSession) -> Database:
    return as_uow(session).db


# ---- users ------------------------------------------------------------------------------------------------


async def create_organization(
    session: AsyncSession, principal: Principal, *, name: str, slug: str, privacy_email: str | None = None
) -> Organization:
    """A new organization; only the operator (the `telecare` command) creates one."""
    if not rules.is_system(principal):
        raise Forbidden("Organizations are created by the operator (`telecare orgs-create`).")
    slug = slug.strip().lower()
    if (await session.execute(select(Organization.id).where(Organization.slug == slug))).first():
        raise SlugTaken(errors=[FieldError("slug", "already used by another organization")])
    org = Organization(name=name.strip(), slug=slug, privacy_contact_email=privacy_email)
    session.add(org)
    await session.flush()
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction.CREATE,
        resource_type="Organization",
        resource_id=org.id,
        org_id=org.id,
        purpose=Purpose.OPERATIONS,
        detail={"slug": slug},
    )
    return org


async def create_user(
    session: AsyncSession,
    principal: Principal,
    *,
    email: str,
    role: Role,
    display_name: str,
    password: str | None,
) -> User:
    """A user of the caller's organization. The caller's own grants must cover the new role's: nobody hands
    out an account that reaches data they cannot reach (`access.rules.may_grant_role`)."""
    access.reach_for(principal, Resource.USER, Action.CREATE)
    if not rules.may_grant_role(principal, role):
        raise Forbidden(
            "You cannot create an account whose role reaches data yours cannot; "
            "the operator creates it with `telecare users create`.",
            errors=[FieldError("role", f"{role} is beyond your own access")],
        )
    org_id = principal.org_id
    email = email.strip().lower()
    if (await session.execute(select(User.id).where(func.lower(User.email) == email))).first():
        raise EmailTaken(errors=[FieldError("email", "already registered")])
    settings = _db(session).settings
    user = User(
        org_id=org_id,
        email=email,
        role=role,
        display_name=display_name,
        password_hash=sessions.passwords(settings).hash(password) if password else None,
    )
    session.add(user)
    await session.flush()
    if role.is_staff:
        sessions.set_totp_secret(settings, user, sessions.new_totp_secret())
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction.CREATE,
        resource_type="User",
        resource_id=user.id,
        org_id=org_id,
        purpose=Purpose.OPERATIONS,
        detail={"role": str(role)},
    )
    return user


async def update_user(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: int,
    display_name: str | None = None,
    is_active: bool | None = None,
) -> User:
    """Rename, disable or re-enable a user (each change audited)."""
    user = await get_user(session, principal, user_id=user_id, action=Action.UPDATE)
    if display_name is not None and display_name != user.display_name:
        user.display_name = display_name
        await audit.record(
            session,
            principal.actor(),
            action=AuditAction.UPDATE,
            resource_type="User",
            resource_id=user.id,
            org_id=user.org_id,
            purpose=Purpose.OPERATIONS,
            detail={"fields": ["display_name"]},
        )
    if is_active is not None and is_active != user.is_active:
        user = await set_active(session, principal, user_id=user_id, active=is_active)
    return user


async def set_active(session: AsyncSession, principal: Principal, *, user_id: int, active: bool) -> User:
    """Disabling a user revokes every session and token in the same transaction (docs/security.md#goal-19)."""
    user = await get_user(session, principal, user_id=user_id, action=Action.UPDATE)
    if user.id == principal.user_id and not active:
        raise Forbidden("You cannot disable your own account.")
    user.is_active = active
    user.disabled_at = None if active else utc_now()
    if not active:
        await sessions.revoke_all_credentials(session, user.id)
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction.UPDATE,
        resource_type="User",
        resource_id=user.id,
        org_id=user.org_id,
        purpose=Purpose.OPERATIONS,
        detail={"is_active": active},
    )
    return user


async def get_user(
    session: AsyncSession, principal: Principal, *, user_id: int, action: Action = Action.READ
) -> User:
    reach = access.reach_for(principal, Resource.USER, action)
    user = await session.get(User, user_id)
    if (
        user is None
        or user.org_id != principal.org_id
        or (reach is Reach.OWN and user.id != principal.user_id)
    ):
        raise NotFound("No such user.")
    return user


async def list_users(session: AsyncSession, principal: Principal) -> list[User]:
    reach = access.reach_for(principal, Resource.USER, Action.SEARCH)
    stmt = select(User).where(User.org_id == principal.org_id).order_by(User.id)
    if reach is Reach.OWN:
        stmt = stmt.where(User.id == principal.user_id)
    return list((await session.execute(stmt)).scalars())


# ---- patients ---------------------------------------------------------------------------------------------


async def get_patient(session: AsyncSession, principal: Principal, *, patient_id: int) -> Patient:
    return await access.open_patient(
        session, principal, patient_id, resource=Resource.PATIENT, action=Action.READ
    )


async def search_patients(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str | None = None,
    mrn: str | None = None,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Patient], int]:
    scope = access.patient_scope(principal, Resource.PATIENT, Action.SEARCH)
    stmt = select(Patient).where(Patient.id.in_(scope.scalar_subquery()))
    if name:
        pattern = f"%{name.strip().lower()}%"
        stmt = stmt.where(
            func.lower(Patient.family_name + " " + Patient.given_name).like(pattern)
            | func.lower(Patient.given_name + " " + Patient.family_name).like(pattern)
        )
    if mrn:
        stmt = stmt.where(Patient.mrn == mrn.strip())
    if state:
        stmt = stmt.where(Patient.state == state.strip().upper())
    total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = list(
        (
            await session.execute(
                stmt.order_by(Patient.family_name, Patient.given_name, Patient.id).limit(limit).offset(offset)
            )
        ).scalars()
    )
    await access.record_search(
        session,
        principal,
        resource=Resource.PATIENT,
        patient_ids=[p.id for p in rows],
        query={k: bool(v) for k, v in (("name", name), ("mrn", mrn), ("state", state))},
    )
    return rows, total


async def _mrn_free(session: AsyncSession, org_id: int, mrn: str) -> bool:
    return (
        await session.execute(select(Patient.id).where(Patient.org_id == org_id, Patient.mrn == mrn))
    ).first() is None


async def create_patient(session: AsyncSession, principal: Principal, *, data: PatientCreate) -> Patient:
    access.reach_for(principal, Resource.PATIENT, Action.CREATE)
    if not await _mrn_free(session, principal.org_id, data.mrn):
        raise MrnTaken(errors=[FieldError("mrn", "already registered in this organization")])
    patient = Patient(org_id=principal.org_id, **data.model_dump())
    session.add(patient)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.PATIENT,
        action=Action.CREATE,
        patient_id=patient.id,
        resource_id=patient.id,
    )
    return patient


async def update_patient(
    session: AsyncSession, principal: Principal, *, patient_id: int, data: PatientUpdate
) -> Patient:
    patient = await access.open_patient(
        session, principal, patient_id, resource=Resource.PATIENT, action=Action.UPDATE
    )
    changes = data.model_dump(exclude_unset=True)
    identity = sorted(rules.IDENTITY_FIELDS & changes.keys())
    if identity and not rules.edits_identity(principal):
        raise Forbidden(
            "Your name and other identity details are changed by your care team, not here.",
            errors=[FieldError(f, "changed by your care team at registration") for f in identity],
        )
    for required in ("given_name", "family_name", "state"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(errors=[FieldError(required, "cannot be empty")])
    for key, value in changes.items():
        setattr(patient, key, value)
    await session.flush()
    return patient


async def care_team(session: AsyncSession, principal: Principal, *, patient_id: int) -> list[dict[str, Any]]:
    await access.open_patient(session, principal, patient_id, resource=Resource.CARE_TEAM, action=Action.READ)
    rows = (
        await session.execute(
            select(CareTeamMember, Practitioner, User)
            .join(Practitioner, Practitioner.id == CareTeamMember.practitioner_id)
            .join(User, User.id == Practitioner.user_id)
            .where(CareTeamMember.patient_id == patient_id)
            .order_by(CareTeamMember.id)
        )
    ).all()
    return [
        {
            "id": m.id,
            "patient_id": m.patient_id,
            "practitioner_id": p.id,
            "user_id": u.id,
            "display_name": u.display_name,
            "credentials": p.credentials,
            "role": m.role,
        }
        for m, p, u in rows
    ]


async def add_care_team_member(
    session: AsyncSession, principal: Principal, *, patient_id: int, practitioner_id: int, role: str
) -> CareTeamMember:
    await access.open_patient(
        session, principal, patient_id, resource=Resource.CARE_TEAM, action=Action.CREATE
    )
    practitioner = await session.get(Practitioner, practitioner_id)
    if practitioner is None or practitioner.org_id != principal.org_id:
        raise ValidationFailed(errors=[FieldError("practitioner_id", "no such practitioner")])
    existing = (
        await session.execute(
            select(CareTeamMember).where(
                CareTeamMember.patient_id == patient_id, CareTeamMember.practitioner_id == practitioner_id
            )
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    member = CareTeamMember(
        org_id=principal.org_id, patient_id=patient_id, practitioner_id=practitioner_id, role=role
    )
    session.add(member)
    await session.flush()
    return member


async def remove_care_team_member(
    session: AsyncSession, principal: Principal, *, patient_id: int, member_id: int
) -> None:
    await access.open_patient(
        session,
        principal,
        patient_id,
        resource=Resource.CARE_TEAM,
        action=Action.DELETE,
        resource_id=member_id,
    )
    member = await session.get(CareTeamMember, member_id)
    # The owner key is part of the lookup (OpenEMR #11853: never delete by id alone).
    if member is None or member.patient_id != patient_id:
        raise NotFound("No such care team member.")
    practitioner = await session.get(Practitioner, member.practitioner_id)
    await session.delete(member)
    await session.flush()
    if practitioner is not None:
        # The member's open sockets stop streaming this patient (auth.sockets re-checks on this event).
        sessions.publish_revoked(session, user_id=practitioner.user_id, patient_id=patient_id)


async def export_patient(session: AsyncSession, principal: Principal, *, patient_id: int) -> dict[str, Any]:
    """The patient's compartment as JSON (right of access; clinician export). Audited as export."""
    from telecare.identity.schemas import PatientRead

    patient = await access.open_patient(
        session, principal, patient_id, resource=Resource.PATIENT, action=Action.EXPORT
    )
    team = (
        await session.execute(
            select(CareTeamMember, Practitioner, User)
            .join(Practitioner, Practitioner.id == CareTeamMember.practitioner_id)
            .join(User, User.id == Practitioner.user_id)
            .where(CareTeamMember.patient_id == patient_id)
        )
    ).all()
    bundle: dict[str, Any] = {
        "exported_at": utc_now().isoformat(),
        "patient": PatientRead.model_validate(patient).model_dump(mode="json"),
        "care_team": [
            {"display_name": u.display_name, "credentials": p.credentials, "role": m.role} for m, p, u in team
        ],
    }
    for section, exporter in _exporters.items():
        bundle[section] = await exporter(session, principal, patient_id)
    return bundle


_exporters: dict[str, Any] = {}


def register_exporter(section: str, fn: Any) -> None:
    """Other domains add their part of the patient compartment to exports."""
    _exporters[section] = fn


async def practitioners(
    session: AsyncSession, principal: Principal, practitioner_id: int | None = None
) -> list[dict[str, Any]]:
    from telecare.identity.models import CompactPrivilege, License

    access.reach_for(principal, Resource.PRACTITIONER, Action.READ if practitioner_id else Action.SEARCH)
    stmt = (
        select(Practitioner, User)
        .join(User, User.id == Practitioner.user_id)
        .where(Practitioner.org_id == principal.org_id)
        .order_by(Practitioner.id)
    )
    if practitioner_id is not None:
        stmt = stmt.where(Practitioner.id == practitioner_id)
    rows = (await session.execute(stmt)).all()
    if practitioner_id is not None and not rows:
        raise NotFound("No such practitioner.")
    ids = [p.id for p, _ in rows]
    licenses = (
        (
            await session.execute(
                select(License).where(License.practitioner_id.in_(ids)).order_by(License.state)
            )
        )
        .scalars()
        .all()
    )
    privileges = (
        (await session.execute(select(CompactPrivilege).where(CompactPrivilege.practitioner_id.in_(ids))))
        .scalars()
        .all()
    )
    out = []
    for p, u in rows:
        out.append(
            {
                "id": p.id,
                "user_id": u.id,
                "display_name": u.display_name,
                "role": u.role,
                "npi": p.npi,
                "credentials": p.credentials,
                "specialties": p.specialties,
                "residence_state": p.residence_state,
                "licenses": [lic for lic in licenses if lic.practitioner_id == p.id],
                "compact_privileges": [c for c in privileges if c.practitioner_id == p.id],
            }
        )
    return out


async def patients_by_state(session: AsyncSession, principal: Principal) -> list[tuple[str, int]]:
    """Aggregate counts only: no patient-level data (informatics)."""
    access.reach_for(principal, Resource.AGGREGATE, Action.READ)
    rows = (
        await session.execute(
            select(Patient.state, func.count())
            .where(Patient.org_id == principal.org_id)
            .group_by(Patient.state)
            .order_by(Patient.state)
        )
    ).all()
    return [(state, count) for state, count in rows]


# ---- CSV import -------------------------------------------------------------------------------------------

CSV_COLUMNS = [
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
    "care_team_emails",
]
REQUIRED_CSV = {"mrn", "given_name", "family_name", "birth_date", "sex", "state"}


@dataclass
class ImportReport:
    created: int = 0
    errors: list[str] = field(default_factory=list)


async def import_patients_csv(session: AsyncSession, *, org: Organization, text: str) -> ImportReport:
    """All or nothing: any bad row (reported by line number and column) imports nothing."""
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = REQUIRED_CSV - set(header)
    if missing:
        report.errors.append(f"line 1: missing column(s): {', '.join(sorted(missing))}")
        return report
    unknown = set(header) - set(CSV_COLUMNS)
    if unknown:
        report.errors.append(f"line 1: unknown column(s): {', '.join(sorted(unknown))}")
        return report
    staff = {
        u.email.lower(): u
        for u in (
            await session.execute(select(User).where(User.org_id == org.id, User.role != "patient"))
        ).scalars()
    }
    practitioner_of = {
        p.user_id: p
        for p in (await session.execute(select(Practitioner).where(Practitioner.org_id == org.id))).scalars()
    }
    seen: dict[str, int] = {}
    pending: list[tuple[PatientCreate, list[int]]] = []
    for raw in reader:
        line = reader.line_num
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        data = {k: v for k, v in row.items() if k != "care_team_emails" and v != ""}
        try:
            model = PatientCreate.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                col = ".".join(str(p) for p in err["loc"]) or "row"
                report.errors.append(f"line {line}: {col}: {err['msg']}")
            continue
        if model.mrn in seen:
            report.errors.append(f"line {line}: mrn: duplicates line {seen[model.mrn]}")
            continue
        seen[model.mrn] = line
        if not await _mrn_free(session, org.id, model.mrn):
            report.errors.append(f"line {line}: mrn: already registered in this organization")
            continue
        team: list[int] = []
        for email in filter(None, (e.strip().lower() for e in row.get("care_team_emails", "").split(";"))):
            user = staff.get(email)
            if user is None or user.id not in practitioner_of:
                report.errors.append(f"line {line}: care_team_emails: {email} is not a clinician here")
                continue
            team.append(practitioner_of[user.id].id)
        pending.append((model, team))
    if report.errors:
        return report
    for model, team in pending:
        patient = Patient(org_id=org.id, **model.model_dump())
        session.add(patient)
        await session.flush()
        for practitioner_id in team:
            session.add(CareTeamMember(org_id=org.id, patient_id=patient.id, practitioner_id=practitioner_id))
        await audit.record(
            session,
            audit.SYSTEM_ACTOR,
            action=AuditAction.CREATE,
            resource_type="Patient",
            resource_id=patient.id,
            patient_id=patient.id,
            org_id=org.id,
            purpose=Purpose.OPERATIONS,
            detail={"via": "csv_import"},
        )
        report.created += 1
    return report
