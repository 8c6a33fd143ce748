"""The enforcement point below every surface (pages, REST, FHIR, exports, WebSockets).

`require(...)` checks the role policy and token scopes; `patient_scope(...)` gives the ids of the patients a
principal may reach for a resource and action, and every repository holding patient data starts from it;
`open_patient(...)` authorises and audits access to one patient's data in the caller's transaction.
Other domains extend the care relationship (a clinician with a visit) with `register_care_relationship`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, and_, bindparam, func, literal, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access.models import BreakGlassGrant
from telecare.access.policy import SCOPE_LETTER, Action, Reach, Resource, allowed_reach
from telecare.audit import service as audit
from telecare.audit.models import AuditAction, AuditOutcome, Purpose
from telecare.auth.dependencies import defer_independent_write
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.errors import AppError, Forbidden, NotFound
from telecare.core.time import utc_now
from telecare.identity.models import CareTeamMember, Patient, Practitioner


@dataclass(frozen=True)
class ReachOf:
    """Whose care relationships a query selects: one principal's ids, or bind parameters standing for them
    in a statement prepared once and executed for every caller (`open_patient`)."""

    user_id: Any
    org_id: Any

    @classmethod
    def of(cls, principal: Principal) -> ReachOf:
        return cls(principal.user_id, principal.org_id)


CareRelationship = Callable[[ReachOf], Select[int]]
_care_relationships: list[CareRelationship] = []


def register_care_relationship(fn: CareRelationship) -> CareRelationship:
    """Add a source of clinician-patient relationships (e.g. visits). `fn` returns a SELECT of the ids of
    the patients `ReachOf.user_id` has that relationship with in organization `ReachOf.org_id`; it must use
    only those two (they may be bind parameters)."""
    _care_relationships.append(fn)
    _OPEN_STATEMENTS.clear()
    return fn


class PatientNotAccessible(NotFound):
    """The patient does not exist or is outside the caller's reach (no existence oracle)."""

    code = "patient_not_found"
    title = "Patient not found"


def audit_key(session: AsyncSession) -> bytes:
    return as_uow(session).audit_key


def reach_for(principal: Principal, resource: Resource, action: Action) -> Reach:
    """Role policy intersected with token scopes; raises Forbidden (not audited: no patient involved)."""
    reach = allowed_reach(principal.role, resource, action)
    if reach is None or not principal.has_scope(str(resource), SCOPE_LETTER[action]):
        raise Forbidden(f"Not permitted: {action} {resource}.")
    if action is Action.EXPORT and not principal.has_scope(str(resource), "s"):
        raise Forbidden(f"Not permitted: {action} {resource}.")
    return reach


def _care_team_ids(reach: ReachOf) -> Select[int]:
    return (
        select(CareTeamMember.patient_id)
        .join(Practitioner, Practitioner.id == CareTeamMember.practitioner_id)
        .where(Practitioner.user_id == reach.user_id, CareTeamMember.org_id == reach.org_id)
    )


def _break_glass_ids(reach: ReachOf, now: Any = None) -> Select[int]:
    return select(BreakGlassGrant.patient_id).where(
        BreakGlassGrant.user_id == reach.user_id,
        BreakGlassGrant.org_id == reach.org_id,
        BreakGlassGrant.expires_at > (utc_now() if now is None else now),
    )


def patient_scope(principal: Principal, resource: Resource, action: Action) -> Select[int]:
    """SELECT of the patient ids `principal` may reach for (resource, action). Raises Forbidden when the
    role has no grant at all."""
    reach = reach_for(principal, resource, action)
    in_org = Patient.org_id == principal.org_id
    if reach is Reach.OWN:
        own = principal.patient_id if principal.patient_id is not None else -1
        return select(Patient.id).where(in_org, Patient.id == own)
    if reach is Reach.ORG:
        return select(Patient.id).where(in_org)
    return select(Patient.id).where(in_org, Patient.id.in_(_care_ids(ReachOf.of(principal))))


def _care_ids(reach: ReachOf, now: Any = None) -> Any:
    sources = [
        _care_team_ids(reach),
        _break_glass_ids(reach, now),
        *(fn(reach) for fn in _care_relationships),
    ]
    return union(*sources).scalar_subquery()


def _regular_reach(reach: ReachOf) -> Any:
    """Patient.id is reached through the care team or a care relationship (not break-the-glass)."""
    return Patient.id.in_(
        union(_care_team_ids(reach), *(fn(reach) for fn in _care_relationships)).scalar_subquery()
    )


def _glass_reach(reach: ReachOf, now: Any = None) -> Any:
    return Patient.id.in_(_break_glass_ids(reach, now).scalar_subquery())


# open_patient's statement for each (reach, with the break-the-glass flags), built once: building and
# hashing the union of every care relationship cost more per request than running it. Its bind parameters:
_P_PATIENT: Any = bindparam("tc_patient")
_P_USER: Any = bindparam("tc_user")
_P_ORG: Any = bindparam("tc_org")
_P_NOW: Any = bindparam("tc_now")
_P_OWN: Any = bindparam("tc_own")
_OPEN_STATEMENTS: dict[tuple[Reach, bool], Any] = {}


def _open_statement(reach: Reach, emergency: bool) -> Any:
    stmt = _OPEN_STATEMENTS.get((reach, emergency))
    if stmt is not None:
        return stmt
    template = ReachOf(_P_USER, _P_ORG)
    stmt = select(Patient).where(Patient.id == _P_PATIENT, Patient.org_id == _P_ORG)
    if reach is Reach.OWN:
        stmt = stmt.where(Patient.id == _P_OWN)
    elif reach is Reach.CARE:
        stmt = stmt.where(Patient.id.in_(_care_ids(template, _P_NOW)))
    if emergency:  # whether the only reason it reaches the patient is a break-the-glass grant, same query
        stmt = stmt.add_columns(_regular_reach(template), _glass_reach(template, _P_NOW))
    _OPEN_STATEMENTS[(reach, emergency)] = stmt
    return stmt


async def via_break_glass(session: AsyncSession, principal: Principal, patient_id: int) -> bool:
    """True when the only reason `principal` reaches the patient is a live break-the-glass grant."""
    reach = ReachOf.of(principal)
    stmt = select(literal(1)).where(
        Patient.id == patient_id,
        Patient.id.in_(
            union(_care_team_ids(reach), *(fn(reach) for fn in _care_relationships)).scalar_subquery()
        ),
    )
    if (await session.execute(stmt)).first() is not None:
        return False
    return (
        await session.execute(
            select(literal(1)).where(
                and_(BreakGlassGrant.patient_id == patient_id),
                BreakGlassGrant.patient_id.in_(_break_glass_ids(reach).scalar_subquery()),
            )
        )
    ).first() is not None


def record_denial(
    session: AsyncSession,
    principal: Principal,
    *,
    resource: Resource | str,
    action: Action,
    patient_id: int | None,
    resource_id: str | int | None,
) -> None:
    """Audit a refused access; persists even though the request's transaction rolls back."""
    key = audit_key(session)

    async def write(s: AsyncSession) -> None:
        await audit.record(
            s,
            principal.actor(),
            key=key,
            action=AuditAction(str(action)),
            resource_type=str(resource),
            resource_id=resource_id,
            patient_id=patient_id,
            outcome=AuditOutcome.DENIED,
            purpose=principal.purpose,
        )

    defer_independent_write(session, write)


async def record_access(
    session: AsyncSession,
    principal: Principal,
    *,
    resource: Resource | str,
    action: Action | AuditAction,
    patient_id: int | None,
    resource_id: str | int | None = None,
    detail: dict[str, Any] | None = None,
    purpose: Purpose | None = None,
) -> None:
    """Audit a successful access in the caller's transaction."""
    if purpose is None:
        purpose = principal.purpose
        if (
            patient_id is not None
            and principal.role.is_clinician
            and await via_break_glass(session, principal, patient_id)
        ):
            purpose = Purpose.EMERGENCY
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction(str(action)),
        resource_type=str(resource),
        resource_id=resource_id,
        patient_id=patient_id,
        purpose=purpose,
        detail=detail,
    )


async def open_patient(
    session: AsyncSession,
    principal: Principal,
    patient_id: int,
    *,
    resource: Resource,
    action: Action,
    resource_id: str | int | None = None,
    audit_access: bool = True,
) -> Patient:
    """Authorise `action` on `resource` of one patient; audit it; return the patient row.

    A role without the grant gets 403; a patient outside reach gets 404, like one that does not exist."""
    try:
        reach = reach_for(principal, resource, action)
    except AppError:
        record_denial(
            session,
            principal,
            resource=resource,
            action=action,
            patient_id=patient_id,
            resource_id=resource_id,
        )
        raise
    emergency = audit_access and principal.role.is_clinician
    params: dict[str, Any] = {"tc_patient": patient_id, "tc_org": principal.org_id}
    if reach is Reach.OWN:
        params["tc_own"] = principal.patient_id if principal.patient_id is not None else -1
    if reach is Reach.CARE or emergency:
        params.update(tc_user=principal.user_id, tc_now=utc_now())
    row = (await session.execute(_open_statement(reach, emergency), params)).first()
    patient: Patient | None = None if row is None else row[0]
    flags: tuple[Any, ...] = tuple(row)[1:] if row is not None else ()
    via_glass = emergency and len(flags) == 2 and not flags[0] and bool(flags[1])
    if patient is None:
        record_denial(
            session,
            principal,
            resource=resource,
            action=action,
            patient_id=patient_id,
            resource_id=resource_id,
        )
        raise PatientNotAccessible()
    if audit_access:
        await record_access(
            session,
            principal,
            resource=resource,
            action=action,
            patient_id=patient_id,
            resource_id=resource_id if resource_id is not None else patient_id,
            purpose=Purpose.EMERGENCY if via_glass else principal.purpose,
        )
    return patient


class PatientRecord(Protocol):
    """A row of a patient's record that belongs to one organization (a thread, a consult, a skin case)."""

    org_id: Any
    patient_id: Any


R = TypeVar("R", bound=PatientRecord)


async def open_patient_record(
    session: AsyncSession,
    principal: Principal,
    model: type[R],
    record_id: int,
    *,
    resource: Resource,
    action: Action,
    not_found: type[AppError],
) -> R:
    """Load one record of a patient's data by id and authorise `action` on it through `open_patient` (which
    audits). A role without the grant gets 403 before the lookup, whether or not the record exists; a record
    that does not exist, is in another organization or belongs to a patient out of reach answers the same
    `not_found` (no existence oracle), audited as denied."""
    try:
        reach_for(principal, resource, action)
    except AppError:
        record_denial(
            session, principal, resource=resource, action=action, patient_id=None, resource_id=record_id
        )
        raise
    record = await session.get(model, record_id)
    if record is None or record.org_id != principal.org_id:
        record_denial(
            session, principal, resource=resource, action=action, patient_id=None, resource_id=record_id
        )
        raise not_found()
    try:
        await open_patient(
            session, principal, record.patient_id, resource=resource, action=action, resource_id=record_id
        )
    except PatientNotAccessible:
        raise not_found() from None
    return record


async def record_search(
    session: AsyncSession,
    principal: Principal,
    *,
    resource: Resource | str,
    patient_ids: Sequence[int],
    query: dict[str, Any] | None = None,
) -> None:
    """One audit entry per patient whose data a search returned, plus one for the query itself."""
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction.SEARCH,
        resource_type=str(resource),
        detail={"query": query or {}, "count": len(patient_ids)},
        purpose=principal.purpose,
    )
    for pid in sorted(set(patient_ids)):
        await record_access(session, principal, resource=resource, action=AuditAction.SEARCH, patient_id=pid)


# ---- break the glass --------------------------------------------------------------------------------------


class BreakGlassRefused(Forbidden):
    """The emergency-access request lacked a reason or the password was wrong."""

    code = "break_glass_refused"
    title = "Emergency access refused"


def break_glass_duration(session: AsyncSession) -> timedelta:
    minutes = as_uow(session).settings.break_glass_minutes
    return timedelta(minutes=min(minutes, 60))  # docs/security.md#goal-6: never beyond 60 minutes


# ---- re-checks of open sockets -----------------------------------------------------------------------------


async def still_reachable(
    session: AsyncSession,
    principal: Principal,
    patient_ids: Collection[int],
    *,
    resource: Resource,
    action: Action = Action.READ,
) -> set[int]:
    """Which of `patient_ids` the principal still reaches (the scope every read starts from). A re-check
    of what an open socket already streams, so not audited; the role losing the grant reaches none."""
    if not patient_ids:
        return set()
    try:
        scope = patient_scope(principal, resource, action)
    except AppError:
        return set()
    rows = await session.execute(
        select(Patient.id).where(Patient.id.in_(list(patient_ids)), Patient.id.in_(scope.scalar_subquery()))
    )
    return set(rows.scalars().all())


async def next_break_glass_expiry(
    session: AsyncSession, principal: Principal, patient_ids: Collection[int]
) -> datetime | None:
    """When the earliest live break-the-glass grant of `principal` on one of `patient_ids` ends."""
    if not patient_ids:
        return None
    expiry: datetime | None = await session.scalar(
        select(func.min(BreakGlassGrant.expires_at)).where(
            BreakGlassGrant.user_id == principal.user_id,
            BreakGlassGrant.org_id == principal.org_id,
            BreakGlassGrant.patient_id.in_(list(patient_ids)),
            BreakGlassGrant.expires_at > utc_now(),
        )
    )
    return expiry
