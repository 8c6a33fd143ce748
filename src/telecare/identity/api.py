"""REST routes for identity: patients, care teams, practitioners, users, tokens, aggregates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from telecare.auth import service as auth_service
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.params import PathId
from telecare.identity import service
from telecare.identity.models import User
from telecare.identity.schemas import (
    CareTeamMemberCreate,
    CareTeamMemberRead,
    PatientCountByState,
    PatientCreate,
    PatientPage,
    PatientRead,
    PatientUpdate,
    PractitionerRead,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserRead,
    UserUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["identity"])


def _user_read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        role=user.role,
        is_active=user.is_active,
        totp_enrolled=user.totp_enrolled_at is not None,
        created_at=user.created_at,
    )


@router.get("/me", response_model=UserRead)
async def me(session: DbSession, principal: CurrentPrincipal) -> UserRead:
    """The signed-in user."""
    return _user_read(await service.get_user(session, principal, user_id=principal.user_id))


@router.get("/patients", response_model=PatientPage)
async def search_patients(
    session: DbSession,
    principal: CurrentPrincipal,
    name: Annotated[str | None, Query(max_length=100)] = None,
    mrn: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> PatientPage:
    """Patients the caller may see, filtered by name, MRN or state."""
    rows, total = await service.search_patients(
        session, principal, name=name, mrn=mrn, state=state, limit=limit, offset=offset
    )
    return PatientPage(
        items=[PatientRead.model_validate(p) for p in rows], total=total, limit=limit, offset=offset
    )


@router.post("/patients", response_model=PatientRead, status_code=201)
async def create_patient(body: PatientCreate, session: DbSession, principal: CurrentPrincipal) -> PatientRead:
    """Register a patient in the caller's organization."""
    return PatientRead.model_validate(await service.create_patient(session, principal, data=body))


@router.get("/patients/{patient_id}", response_model=PatientRead)
async def read_patient(patient_id: PathId, session: DbSession, principal: CurrentPrincipal) -> PatientRead:
    """One patient's demographics and contact details."""
    return PatientRead.model_validate(await service.get_patient(session, principal, patient_id=patient_id))


@router.patch("/patients/{patient_id}", response_model=PatientRead)
async def update_patient(
    patient_id: PathId, body: PatientUpdate, session: DbSession, principal: CurrentPrincipal
) -> PatientRead:
    """Change contact details."""
    patient = await service.update_patient(session, principal, patient_id=patient_id, data=body)
    return PatientRead.model_validate(patient)


@router.get("/patients/{patient_id}/$export")
async def export_patient(
    patient_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """The patient's whole compartment as JSON."""
    return await service.export_patient(session, principal, patient_id=patient_id)


@router.get("/patients/{patient_id}/care-team", response_model=list[CareTeamMemberRead])
async def read_care_team(
    patient_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    """The patient's care team."""
    return await service.care_team(session, principal, patient_id=patient_id)


@router.post("/patients/{patient_id}/care-team", response_model=CareTeamMemberRead, status_code=201)
async def add_care_team_member(
    patient_id: PathId, body: CareTeamMemberCreate, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Add a practitioner to the care team."""
    member = await service.add_care_team_member(
        session, principal, patient_id=patient_id, practitioner_id=body.practitioner_id, role=body.role
    )
    rows = await service.practitioners(session, principal, member.practitioner_id)
    return {
        "id": member.id,
        "patient_id": patient_id,
        "practitioner_id": member.practitioner_id,
        "user_id": rows[0]["user_id"],
        "display_name": rows[0]["display_name"],
        "credentials": rows[0]["credentials"],
        "role": member.role,
    }


@router.delete("/patients/{patient_id}/care-team/{member_id}", status_code=204)
async def remove_care_team_member(
    patient_id: PathId, member_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """Remove a practitioner from the care team."""
    await service.remove_care_team_member(session, principal, patient_id=patient_id, member_id=member_id)
    return Response(status_code=204)


@router.get("/practitioners", response_model=list[PractitionerRead])
async def list_practitioners(session: DbSession, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """The organization's practitioner directory with licences and compact privileges."""
    return await service.practitioners(session, principal)


@router.get("/practitioners/{practitioner_id}", response_model=PractitionerRead)
async def read_practitioner(
    practitioner_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """One practitioner."""
    return (await service.practitioners(session, principal, practitioner_id))[0]


@router.get("/users", response_model=list[UserRead])
async def list_users(session: DbSession, principal: CurrentPrincipal) -> list[UserRead]:
    """Users of the organization (admins) or yourself."""
    return [_user_read(u) for u in await service.list_users(session, principal)]


@router.post("/users", response_model=UserRead, status_code=201)
async def create_user(body: UserCreate, session: DbSession, principal: CurrentPrincipal) -> UserRead:
    """Create a user (admins), with a role no wider than the caller's own."""
    user = await service.create_user(
        session,
        principal,
        email=body.email,
        role=body.role,
        display_name=body.display_name,
        password=body.password,
    )
    return _user_read(user)


@router.get("/users/{user_id}", response_model=UserRead)
async def read_user(user_id: PathId, session: DbSession, principal: CurrentPrincipal) -> UserRead:
    """One user."""
    return _user_read(await service.get_user(session, principal, user_id=user_id))


@router.patch("/users/{user_id}", response_model=UserRead)
async def update_user(
    user_id: PathId, body: UserUpdate, session: DbSession, principal: CurrentPrincipal
) -> UserRead:
    """Rename, disable or re-enable a user. Disabling revokes all their sessions and tokens at once."""
    user = await service.update_user(
        session, principal, user_id=user_id, display_name=body.display_name, is_active=body.is_active
    )
    return _user_read(user)


@router.get("/tokens", response_model=list[TokenRead])
async def list_tokens(session: DbSession, principal: CurrentPrincipal) -> list[TokenRead]:
    """API tokens of the organization (admins). Secrets are never shown again."""
    return [
        TokenRead(
            id=t.id,
            user_id=t.user_id,
            name=t.name,
            scopes=t.scopes,
            created_at=t.created_at,
            expires_at=t.expires_at,
            revoked_at=t.revoked_at,
        )
        for t in await auth_service.list_tokens(session, principal)
    ]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
async def create_token(body: TokenCreate, session: DbSession, principal: CurrentPrincipal) -> TokenCreated:
    """Issue a scoped bearer token for a user of the organization (admins). The secret is shown once."""
    record, token = await auth_service.issue_token(
        session,
        principal,
        user_id=body.user_id,
        scopes=body.scopes,
        name=body.name,
        expires_in_days=body.expires_in_days,
    )
    return TokenCreated(
        id=record.id,
        user_id=record.user_id,
        name=record.name,
        scopes=record.scopes,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=None,
        token=token,
    )


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: PathId, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Revoke a token immediately."""
    await auth_service.revoke_token(session, principal, token_id=token_id)
    return Response(status_code=204)


@router.get("/stats/patients-by-state", response_model=list[PatientCountByState])
async def patients_by_state(session: DbSession, principal: CurrentPrincipal) -> list[PatientCountByState]:
    """De-identified counts of patients per home state."""
    return [
        PatientCountByState(state=s, patients=n)
        for s, n in await service.patients_by_state(session, principal)
    ]
